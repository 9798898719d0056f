package natsbroker

import (
	"context"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/events/eventstest"
	"github.com/mercato/mercato/platform/platformtest"
)

// TestSurvivesServerRestart stops the (embedded) server under a running
// durable subscription, starts it again on the same port and store, and
// checks that nothing stored is lost and new messages flow.
func TestSurvivesServerRestart(t *testing.T) {
	dir := t.TempDir()
	log := platformtest.Logger(t)
	addr, shutdown, err := StartEmbedded(dir, log)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	u, err := url.Parse(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}

	ns := platformtest.Namespace(t)
	b, err := Open(context.Background(), Config{URL: addr, Namespace: ns}, log)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	topic := events.Topic(ns, "order", "order.placed")
	sub := eventstest.Subscribe(t, b, events.Subscription{Consumer: "inventory", Topics: []string{topic}}, nil)
	eventstest.WaitReady(t, b, topic, sub)
	// With the subscriber away, the next message waits in the stream
	// across the restart.
	sub.Stop(t)
	stored := eventstest.Msg(topic, 1)
	if err := b.Publish(context.Background(), stored); err != nil {
		t.Fatalf("publish: %v", err)
	}

	shutdown()
	_, shutdown, err = startEmbedded(dir, port, log)
	if err != nil {
		t.Fatalf("restart on port %d: %v", port, err)
	}
	t.Cleanup(shutdown)

	after := eventstest.Msg(topic, 2)
	eventstest.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return b.Publish(ctx, after) == nil
	}, "a publish to succeed after the restart")
	again := eventstest.Subscribe(t, b, events.Subscription{Consumer: "inventory", Topics: []string{topic}}, nil)
	for _, m := range []events.Message{stored, after} {
		again.WaitFor(t, m.ID)
	}
	again.Stop(t)
}

// TestSubscriptionSurvivesServerRestart keeps a subscription running while
// the server restarts.
func TestSubscriptionSurvivesServerRestart(t *testing.T) {
	cases := []struct {
		name     string
		consumer string
	}{
		{"durable", "inventory"},
		{"broadcast", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			log := platformtest.Logger(t)
			addr, shutdown, err := StartEmbedded(dir, log)
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			u, _ := url.Parse(addr)
			port, _ := strconv.Atoi(u.Port())
			ns := platformtest.Namespace(t)
			b, err := Open(context.Background(), Config{URL: addr, Namespace: ns}, log)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			t.Cleanup(func() { _ = b.Close() })
			topic := events.Topic(ns, "catalog", "product.changed")
			sub := eventstest.Subscribe(t, b, events.Subscription{Consumer: c.consumer, Topics: []string{topic}}, nil)
			eventstest.WaitReady(t, b, topic, sub)

			shutdown()
			_, shutdown, err = startEmbedded(dir, port, log)
			if err != nil {
				t.Fatalf("restart on port %d: %v", port, err)
			}
			t.Cleanup(shutdown)

			// A broadcast subscription only sees messages published after it
			// is back, so keep publishing fresh ones until one arrives.
			eventstest.Eventually(t, func() bool {
				m := eventstest.Msg(topic, 2)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				if b.Publish(ctx, m) != nil {
					return false
				}
				deadline := time.Now().Add(time.Second)
				for time.Now().Before(deadline) {
					if len(sub.ReceivedID(m.ID)) > 0 {
						return true
					}
					time.Sleep(10 * time.Millisecond)
				}
				return false
			}, "a message published after the restart to reach the running subscription")
			sub.Stop(t)
		})
	}
}
