// Package eventstest is the contract every events.Broker adapter must meet,
// as one test suite that each adapter's tests run against a real broker.
package eventstest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/platformtest"
)

// Wait is how long the suite waits for something that should happen; it is
// generous because a loaded CI machine is slow, and passing tests never wait
// for it.
const Wait = 30 * time.Second

// OpenFunc opens a new connection to the broker for namespace; each call is
// one more process instance. It registers the cleanup of what it creates.
type OpenFunc func(t *testing.T, namespace string) events.Broker

// RunBrokerSuite runs the broker contract against the adapter that open
// connects to. Every case gets its own namespace and runs in parallel.
func RunBrokerSuite(t *testing.T, open OpenFunc) {
	cases := []struct {
		name string
		run  func(t *testing.T, s suite)
	}{
		{"publish and subscribe keep body, id and headers", testRoundTrip},
		{"a subscription without topics is refused", testNoTopics},
		{"a durable consumer gets what was published while it was away", testDurableAway},
		{"instances of a durable consumer share its messages", testShared},
		{"every broadcast subscriber gets every message", testBroadcast},
		{"retry redelivers after the delay with the attempt raised", testRetry},
		{"a delayed retry does not hold back later messages", testRetryDoesNotBlock},
		{"dead letters land in the consumer's dead-letter topic", testDeadLetter},
		{"acknowledged messages are not redelivered after resubscribing", testAckedStayAcked},
		{"one subscriber gets each topic's messages in publish order", testOrder},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ns := platformtest.Namespace(t)
			c.run(t, suite{ns: ns, open: func(t *testing.T) events.Broker { t.Helper(); return open(t, ns) }})
		})
	}
}

// suite is what each case gets: its namespace and a way to open instances.
type suite struct {
	ns   string
	open func(t *testing.T) events.Broker
}

func (s suite) topic(name string) string { return events.Topic(s.ns, "suite", name) }

func testRoundTrip(t *testing.T, s suite) {
	b := s.open(t)
	topic := s.topic("thing.happened")
	sub := Subscribe(t, b, events.Subscription{Consumer: "reader", Topics: []string{topic}}, nil)
	WaitReady(t, b, topic, sub)

	m := Msg(topic, 1)
	m.Headers = map[string]string{
		"traceparent":  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"Mercato-Test": "round trip",
	}
	publish(t, b, m)
	got := sub.WaitFor(t, m.ID)
	if got.Msg.Topic != topic || got.Msg.ID != m.ID || string(got.Msg.Body) != string(m.Body) {
		t.Errorf("received %q %q %s, want %q %q %s", got.Msg.Topic, got.Msg.ID, got.Msg.Body, topic, m.ID, m.Body)
	}
	for k, v := range m.Headers {
		if got.Msg.Headers[k] != v {
			t.Errorf("header %s = %q, want %q (all: %v)", k, got.Msg.Headers[k], v, got.Msg.Headers)
		}
	}
	if got.Attempt != 1 {
		t.Errorf("first delivery has attempt %d, want 1", got.Attempt)
	}
}

func testNoTopics(t *testing.T, s suite) {
	b := s.open(t)
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	err := b.Subscribe(ctx, events.Subscription{Consumer: "reader"}, func(context.Context, events.Delivery) {})
	if err == nil {
		t.Fatal("Subscribe without topics returned nil, want an error")
	}
}

func testDurableAway(t *testing.T, s suite) {
	topic := s.topic("thing.happened")
	b := s.open(t)
	first := Subscribe(t, s.open(t), events.Subscription{Consumer: "reader", Topics: []string{topic}}, nil)
	WaitReady(t, b, topic, first)
	first.Stop(t)

	msgs := []events.Message{Msg(topic, 1), Msg(topic, 2), Msg(topic, 3)}
	publish(t, b, msgs...)
	again := Subscribe(t, s.open(t), events.Subscription{Consumer: "reader", Topics: []string{topic}}, nil)
	for _, m := range msgs {
		again.WaitFor(t, m.ID)
	}
}

func testShared(t *testing.T, s suite) {
	topic := s.topic("job.queued")
	sub := events.Subscription{Consumer: "workers", Topics: []string{topic}}
	b := s.open(t)
	one := Subscribe(t, s.open(t), sub, nil)
	two := Subscribe(t, s.open(t), sub, nil)
	WaitReady(t, b, topic, one, two)

	const n = 100
	msgs := make([]events.Message, n)
	for i := range msgs {
		msgs[i] = Msg(topic, i)
	}
	publish(t, b, msgs...)
	Eventually(t, func() bool { return len(one.Received())+len(two.Received()) >= n }, "both instances together receive %d messages", n)

	seen := map[string]int{}
	for _, r := range append(one.Received(), two.Received()...) {
		seen[r.Msg.ID]++
	}
	for _, m := range msgs {
		if seen[m.ID] != 1 {
			t.Errorf("message %s delivered %d times across the instances, want once", m.ID, seen[m.ID])
		}
	}
	if len(one.Received()) == 0 || len(two.Received()) == 0 {
		t.Errorf("instances got %d and %d messages; both should have had a share", len(one.Received()), len(two.Received()))
	}
}

func testBroadcast(t *testing.T, s suite) {
	topic := s.topic("price.changed")
	sub := events.Subscription{Topics: []string{topic}}
	b := s.open(t)
	one := Subscribe(t, s.open(t), sub, nil)
	two := Subscribe(t, s.open(t), sub, nil)
	WaitReady(t, b, topic, one, two)

	msgs := make([]events.Message, 10)
	for i := range msgs {
		msgs[i] = Msg(topic, i)
	}
	publish(t, b, msgs...)
	for _, m := range msgs {
		one.WaitFor(t, m.ID)
		two.WaitFor(t, m.ID)
	}
}

func testRetry(t *testing.T, s suite) {
	const delay = 400 * time.Millisecond
	b := s.open(t)
	topic := s.topic("thing.happened")
	var mu sync.Mutex
	var retriedAt []time.Time
	sub := Subscribe(t, b, events.Subscription{Consumer: "retrier", Topics: []string{topic}}, func(ctx context.Context, d events.Delivery) {
		if d.Attempt() >= 3 {
			settleFailed(t, ctx, "ack", d.Ack(ctx))
			return
		}
		mu.Lock()
		retriedAt = append(retriedAt, time.Now())
		mu.Unlock()
		settleFailed(t, ctx, "retry", d.Retry(ctx, delay))
	})
	WaitReady(t, b, topic, sub)

	m := Msg(topic, 1)
	publish(t, b, m)
	Eventually(t, func() bool { return len(sub.ReceivedID(m.ID)) >= 3 }, "three deliveries of %s", m.ID)

	got := sub.ReceivedID(m.ID)
	mu.Lock()
	defer mu.Unlock()
	for i, r := range got[:3] {
		if r.Attempt != i+1 {
			t.Errorf("delivery %d has attempt %d, want %d", i+1, r.Attempt, i+1)
		}
	}
	for i := range 2 {
		waited := got[i+1].At.Sub(retriedAt[i])
		if waited < delay {
			t.Errorf("retry %d redelivered after %v, before the %v delay", i+1, waited, delay)
		}
		if waited > delay+Wait/2 {
			t.Errorf("retry %d redelivered after %v, far beyond the %v delay", i+1, waited, delay)
		}
	}
}

func testRetryDoesNotBlock(t *testing.T, s suite) {
	b := s.open(t)
	topic := s.topic("thing.happened")
	first, second := Msg(topic, 1), Msg(topic, 2)
	sub := Subscribe(t, b, events.Subscription{Consumer: "retrier", Topics: []string{topic}}, func(ctx context.Context, d events.Delivery) {
		if d.Message().ID == first.ID {
			// Far longer than the test waits for the second message.
			settleFailed(t, ctx, "retry", d.Retry(ctx, time.Hour))
			return
		}
		settleFailed(t, ctx, "ack", d.Ack(ctx))
	})
	WaitReady(t, b, topic, sub)
	publish(t, b, first, second)
	sub.WaitFor(t, second.ID)
	if n := len(sub.ReceivedID(first.ID)); n != 1 {
		t.Errorf("first message delivered %d times, want once (its retry is an hour away)", n)
	}
}

func testDeadLetter(t *testing.T, s suite) {
	b := s.open(t)
	topic := s.topic("thing.happened")
	dlq := events.DeadLetterTopic(s.ns, "worker")
	inspector := Subscribe(t, s.open(t), events.Subscription{Consumer: "inspector", Topics: []string{dlq}}, nil)
	WaitReady(t, b, dlq, inspector)

	const reason = "unknown product prod_123"
	worker := Subscribe(t, b, events.Subscription{Consumer: "worker", Topics: []string{topic}}, func(ctx context.Context, d events.Delivery) {
		if err := b.DeadLetter(ctx, "worker", d.Message(), reason); err != nil {
			settleFailed(t, ctx, "dead letter", err)
			return
		}
		settleFailed(t, ctx, "ack", d.Ack(ctx))
	})
	WaitReady(t, b, topic, worker)

	m := Msg(topic, 7)
	m.Headers = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	publish(t, b, m)
	got := inspector.WaitFor(t, m.ID)
	if got.Msg.Topic != dlq || string(got.Msg.Body) != string(m.Body) {
		t.Errorf("dead letter %q %s, want %q %s", got.Msg.Topic, got.Msg.Body, dlq, m.Body)
	}
	want := map[string]string{
		events.HeaderDeadLetterReason:   reason,
		events.HeaderOriginalTopic:      topic,
		events.HeaderDeadLetterConsumer: "worker",
		"traceparent":                   m.Headers["traceparent"],
	}
	for k, v := range want {
		if got.Msg.Headers[k] != v {
			t.Errorf("dead letter header %s = %q, want %q", k, got.Msg.Headers[k], v)
		}
	}
}

func testAckedStayAcked(t *testing.T, s suite) {
	topic := s.topic("thing.happened")
	sub := events.Subscription{Consumer: "reader", Topics: []string{topic}}
	b := s.open(t)
	first := Subscribe(t, s.open(t), sub, nil)
	WaitReady(t, b, topic, first)
	acked := []events.Message{Msg(topic, 1), Msg(topic, 2), Msg(topic, 3), Msg(topic, 4), Msg(topic, 5)}
	publish(t, b, acked...)
	for _, m := range acked {
		first.WaitFor(t, m.ID)
	}
	first.Stop(t)

	again := Subscribe(t, s.open(t), sub, nil)
	marker := Msg(topic, 6)
	publish(t, b, marker)
	again.WaitFor(t, marker.ID)
	for _, m := range acked {
		if n := len(again.ReceivedID(m.ID)); n > 0 {
			t.Errorf("acknowledged message %s delivered again %d times", m.ID, n)
		}
	}
}

func testOrder(t *testing.T, s suite) {
	b := s.open(t)
	topics := []string{s.topic("stock.reserved"), s.topic("stock.released")}
	sub := Subscribe(t, b, events.Subscription{Consumer: "reader", Topics: topics}, nil)
	WaitReady(t, b, topics[0], sub)
	WaitReady(t, b, topics[1], sub)

	const n = 200
	var msgs []events.Message
	for i := range n {
		msgs = append(msgs, Msg(topics[i%2], i))
	}
	for i := 0; i < n; i += 50 {
		publish(t, b, msgs[i:i+50]...)
	}
	Eventually(t, func() bool { return len(sub.Received()) >= n }, "%d messages", n)
	last := map[string]int{topics[0]: -1, topics[1]: -1}
	for _, r := range sub.Received() {
		var k int
		if _, err := fmt.Sscanf(string(r.Msg.Body), `{"n":%d}`, &k); err != nil {
			t.Fatalf("body %s: %v", r.Msg.Body, err)
		}
		if k <= last[r.Msg.Topic] {
			t.Fatalf("on %s message %d arrived after %d", r.Msg.Topic, k, last[r.Msg.Topic])
		}
		last[r.Msg.Topic] = k
	}
}

// settleFailed reports a failure to settle a delivery, unless it came from
// the subscription ending while the delivery was being settled.
func settleFailed(t *testing.T, ctx context.Context, what string, err error) {
	t.Helper()
	if err != nil && ctx.Err() == nil {
		t.Errorf("%s: %v", what, err)
	}
}

// Msg is a test message on topic whose body carries n.
func Msg(topic string, n int) events.Message {
	return events.Message{Topic: topic, ID: id.New("evt"), Body: fmt.Appendf(nil, `{"n":%d}`, n)}
}

func publish(t *testing.T, b events.Broker, msgs ...events.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	if err := b.Publish(ctx, msgs...); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// probePrefix marks the ids of readiness probes, which subscribers count and
// acknowledge but do not record.
const probePrefix = "probe_"

// Received is one recorded delivery.
type Received struct {
	Msg     events.Message
	Attempt int
	At      time.Time
}

// Subscriber runs a subscription in the background and records what it
// receives.
type Subscriber struct {
	cancel context.CancelFunc
	done   chan error

	mu       sync.Mutex
	received []Received
	probes   int
	stopped  bool
}

// Subscribe starts sub on b. settle decides what to do with each delivery;
// nil acknowledges. The subscription stops when the test ends, if Stop was
// not called before.
func Subscribe(t *testing.T, b events.Broker, sub events.Subscription, settle func(context.Context, events.Delivery)) *Subscriber {
	t.Helper()
	if settle == nil {
		settle = func(ctx context.Context, d events.Delivery) {
			settleFailed(t, ctx, "ack", d.Ack(ctx))
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Subscriber{cancel: cancel, done: make(chan error, 1)}
	go func() {
		s.done <- b.Subscribe(ctx, sub, func(ctx context.Context, d events.Delivery) {
			m := d.Message()
			if strings.HasPrefix(m.ID, probePrefix) {
				s.mu.Lock()
				s.probes++
				s.mu.Unlock()
				_ = d.Ack(ctx)
				return
			}
			s.mu.Lock()
			s.received = append(s.received, Received{Msg: m, Attempt: d.Attempt(), At: time.Now()})
			s.mu.Unlock()
			settle(ctx, d)
		})
	}()
	t.Cleanup(func() { s.Stop(t) })
	return s
}

// Stop ends the subscription and waits until Subscribe has returned.
func (s *Subscriber) Stop(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	s.mu.Unlock()
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("Subscribe returned %v, want nil after its context ended", err)
		}
	case <-time.After(Wait):
		t.Errorf("Subscribe did not return within %v of its context ending", Wait)
	}
}

// Received returns what was delivered so far, in order, probes excluded.
func (s *Subscriber) Received() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.received...)
}

// ReceivedID returns the deliveries of message id.
func (s *Subscriber) ReceivedID(id string) []Received {
	var out []Received
	for _, r := range s.Received() {
		if r.Msg.ID == id {
			out = append(out, r)
		}
	}
	return out
}

// WaitFor waits until message id has been delivered and returns its first
// delivery.
func (s *Subscriber) WaitFor(t *testing.T, id string) Received {
	t.Helper()
	Eventually(t, func() bool { return len(s.ReceivedID(id)) > 0 }, "delivery of %s", id)
	return s.ReceivedID(id)[0]
}

func (s *Subscriber) probed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.probes > 0
}

// WaitReady publishes probe messages on topic until every subscriber has
// received one, so a test knows its subscriptions are in place before it
// publishes what it checks.
func WaitReady(t *testing.T, b events.Broker, topic string, subs ...*Subscriber) {
	t.Helper()
	deadline := time.Now().Add(Wait)
	for {
		ready := true
		for _, s := range subs {
			ready = ready && s.probed()
		}
		if ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriptions on %s not ready after %v", topic, Wait)
		}
		probe := Msg(topic, -1)
		probe.ID = probePrefix + probe.ID
		publish(t, b, probe)
		poll(func() bool {
			for _, s := range subs {
				if !s.probed() {
					return false
				}
			}
			return true
		}, 200*time.Millisecond)
	}
}

// Eventually waits until cond holds, failing the test after Wait.
func Eventually(t testing.TB, cond func() bool, format string, args ...any) {
	t.Helper()
	if !poll(cond, Wait) {
		t.Fatalf("timed out after %v waiting for %s", Wait, fmt.Sprintf(format, args...))
	}
}

// poll checks cond every few milliseconds for up to d.
func poll(cond func() bool, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}
