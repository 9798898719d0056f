// Package natsbroker is the NATS JetStream adapter of the events.Broker port:
// one stream per namespace for events and one for dead letters, durable pull
// consumers for services, ordered consumers for broadcast listeners, and an
// embedded server for `mercato up`.
package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mercato/mercato/platform/events"
)

// Config says where the broker is and how the namespace's streams are kept.
type Config struct {
	// URL is the NATS server, for example nats://127.0.0.1:4222.
	URL string
	// Namespace scopes the streams and subjects (see events.Topic).
	Namespace string
	// Replicas is the streams' replica count; 1 on one machine.
	Replicas int
	// MaxAge is how long the events stream keeps a message; a durable
	// consumer that is away longer misses it. Dead letters are kept until an
	// operator removes them.
	MaxAge time.Duration
	// DuplicateWindow is how long the server remembers event ids to drop
	// republished events (the outbox relay republishes after a crash).
	DuplicateWindow time.Duration
	// AckWait is how long a durable delivery may stay unsettled before the
	// server delivers it again (to this or another instance).
	AckWait time.Duration
	// PullBatch is how many messages a durable subscription buffers ahead.
	PullBatch int
	// ConnectionName identifies the process in the server's monitoring.
	ConnectionName string
}

func (c *Config) setDefaults() {
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.MaxAge <= 0 {
		c.MaxAge = 7 * 24 * time.Hour
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.PullBatch <= 0 {
		c.PullBatch = 64
	}
	if c.ConnectionName == "" {
		c.ConnectionName = "mercato"
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	if !strings.HasPrefix(c.URL, "nats://") && !strings.HasPrefix(c.URL, "tls://") {
		return fmt.Errorf("natsbroker: url %q must start with nats:// or tls://", c.URL)
	}
	if c.Namespace == "" || strings.ContainsAny(c.Namespace, ".*> \t\r\n") {
		return fmt.Errorf("natsbroker: namespace %q must be a single subject token", c.Namespace)
	}
	return nil
}

// StreamName is the JetStream stream holding a namespace's events (subjects
// <namespace>.>). Stream names cannot contain dots, so the namespace is
// upper-cased into MERCATO_EVENTS style.
func StreamName(namespace string) string { return strings.ToUpper(namespace) + "_EVENTS" }

// DeadLetterStreamName is the stream holding a namespace's dead letters
// (subjects <namespace>_dlq.>).
func DeadLetterStreamName(namespace string) string { return strings.ToUpper(namespace) + "_DLQ" }

// stopTimeout bounds how long an ending subscription waits for the server.
const stopTimeout = 5 * time.Second

// Headers the adapter adds to parked messages.
const (
	// headerEventID carries the event id on a dead letter, whose Nats-Msg-Id
	// also names the consumer so that two consumers can park the same event.
	headerEventID = "Mercato-Event-Id"
)

var _ events.Broker = (*Broker)(nil)

// Broker is a connection to NATS JetStream for one namespace.
type Broker struct {
	cfg Config
	log *slog.Logger
	nc  *nats.Conn
	js  jetstream.JetStream
}

// Open connects to the server, which must have JetStream enabled, and makes
// sure the namespace's streams exist with the configured settings. The
// connection reconnects by itself for as long as the broker is open.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Broker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With("broker", "nats")
	nc, err := nats.Connect(cfg.URL,
		nats.Name(cfg.ConnectionName),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("nats error", "err", err) }),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to nats at %s: %w", redact(cfg.URL), err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	b := &Broker{cfg: cfg, log: log, nc: nc, js: js}
	if err := b.ensureStreams(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return b, nil
}

// ensureStreams creates or updates the namespace's two streams; it is
// idempotent, so every process runs it at start.
func (b *Broker) ensureStreams(ctx context.Context) error {
	ns := b.cfg.Namespace
	for _, sc := range []jetstream.StreamConfig{{
		Name:        StreamName(ns),
		Description: "Mercato events of namespace " + ns,
		Subjects:    []string{ns + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      b.cfg.MaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    b.cfg.Replicas,
		Duplicates:  b.cfg.DuplicateWindow,
	}, {
		Name:        DeadLetterStreamName(ns),
		Description: "Mercato dead letters of namespace " + ns,
		Subjects:    []string{ns + "_dlq.>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    b.cfg.Replicas,
		Duplicates:  b.cfg.DuplicateWindow,
	}} {
		if err := b.ensureStream(ctx, sc); err != nil {
			return fmt.Errorf("stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// ensureStream creates the stream, or updates it when its settings differ.
// A stream that already matches is left alone: every process runs this at
// start, and a needless update races with consumers being created.
func (b *Broker) ensureStream(ctx context.Context, want jetstream.StreamConfig) error {
	var err error
	for range 3 {
		var s jetstream.Stream
		s, err = b.js.Stream(ctx, want.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			if _, err = b.js.CreateStream(ctx, want); err == nil {
				return nil
			}
			// Another process may be creating it at the same moment; look
			// again.
		case err != nil:
			return err
		case streamMatches(s.CachedInfo().Config, want):
			return nil
		default:
			_, err = b.js.UpdateStream(ctx, want)
			return err
		}
		if ctx.Err() != nil {
			return err
		}
	}
	return err
}

// streamMatches reports whether an existing stream has the settings this
// adapter manages.
func streamMatches(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) &&
		have.MaxAge == want.MaxAge &&
		have.Replicas == want.Replicas &&
		have.Duplicates == want.Duplicates &&
		have.Storage == want.Storage &&
		have.Retention == want.Retention &&
		have.Discard == want.Discard &&
		have.Description == want.Description
}

// Publish sends msgs in order and returns once JetStream has stored every
// one. The event id is the Nats-Msg-Id, so a message published again within
// the duplicate window is stored once.
func (b *Broker) Publish(ctx context.Context, msgs ...events.Message) error {
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		nm := nats.NewMsg(m.Topic)
		nm.Data = m.Body
		for k, v := range m.Headers {
			nm.Header.Set(k, v)
		}
		var opts []jetstream.PublishOpt
		if m.ID != "" {
			opts = append(opts, jetstream.WithMsgID(m.ID))
		}
		// Asynchronous publishes on one connection are stored in the order
		// sent; waiting for each ack in turn would cost a round trip apiece.
		f, err := b.js.PublishMsgAsync(nm, opts...)
		if err != nil {
			return fmt.Errorf("publish %s: %w", m.Topic, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if errors.Is(err, jetstream.ErrNoStreamResponse) {
				// The server lost the stream (a fresh server behind the same
				// URL); recreate it so that the caller's retry succeeds.
				if serr := b.ensureStreams(ctx); serr != nil {
					b.log.WarnContext(ctx, "streams not recreated", "err", serr)
				}
			}
			return fmt.Errorf("publish %s: %w", msgs[i].Topic, err)
		case <-ctx.Done():
			return fmt.Errorf("publish %s: %w", msgs[i].Topic, ctx.Err())
		}
	}
	return nil
}

// DeadLetter stores m on the consumer's dead-letter subject with the reason
// and waits for JetStream to acknowledge it.
func (b *Broker) DeadLetter(ctx context.Context, consumer string, m events.Message, reason string) error {
	nm := nats.NewMsg(events.DeadLetterTopic(b.cfg.Namespace, consumer))
	nm.Data = m.Body
	for k, v := range m.Headers {
		nm.Header.Set(k, v)
	}
	nm.Header.Set(headerEventID, m.ID)
	nm.Header.Set(events.HeaderDeadLetterReason, headerValue(reason))
	nm.Header.Set(events.HeaderOriginalTopic, m.Topic)
	nm.Header.Set(events.HeaderDeadLetterConsumer, consumer)
	if _, err := b.js.PublishMsg(ctx, nm, jetstream.WithMsgID(consumer+":"+m.ID)); err != nil {
		return fmt.Errorf("dead letter %s for %s: %w", m.ID, consumer, err)
	}
	return nil
}

// headerValue fits text into one header line.
func headerValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
	const limit = 2048
	if len(s) > limit {
		s = s[:limit]
	}
	return s
}

// Close closes the connection; subscriptions end.
func (b *Broker) Close() error {
	b.nc.Close()
	return nil
}

// DeleteStreams removes the namespace's streams and with them every
// consumer; tests and throwaway platforms call it to clean up.
func (b *Broker) DeleteStreams(ctx context.Context) error {
	var errs []error
	for _, name := range []string{StreamName(b.cfg.Namespace), DeadLetterStreamName(b.cfg.Namespace)} {
		if err := b.js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, fmt.Errorf("delete stream %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// consumerSpec is one JetStream consumer serving (part of) a subscription.
type consumerSpec struct {
	stream  string
	durable string // empty for a broadcast (ordered) consumer
	filters []string
}

// specs maps a subscription onto JetStream consumers: one per stream its
// topics live in, or one per topic when the server predates multiple filter
// subjects (nats-server 2.10).
func (b *Broker) specs(sub events.Subscription) ([]consumerSpec, error) {
	if len(sub.Topics) == 0 {
		return nil, errors.New("subscription has no topics")
	}
	ns := b.cfg.Namespace
	byStream := map[string][]string{}
	var order []string
	for _, t := range sub.Topics {
		var stream string
		switch {
		case strings.HasPrefix(t, ns+"_dlq."):
			stream = DeadLetterStreamName(ns)
		case strings.HasPrefix(t, ns+"."):
			stream = StreamName(ns)
		default:
			return nil, fmt.Errorf("topic %q is outside namespace %q", t, ns)
		}
		if _, ok := byStream[stream]; !ok {
			order = append(order, stream)
		}
		byStream[stream] = append(byStream[stream], t)
	}
	multi := supportsMultipleFilters(b.nc.ConnectedServerVersion())
	var specs []consumerSpec
	for _, stream := range order {
		topics := byStream[stream]
		if len(topics) == 1 || multi {
			specs = append(specs, consumerSpec{stream: stream, durable: sub.Consumer, filters: topics})
			continue
		}
		for _, t := range topics {
			durable := sub.Consumer
			if durable != "" {
				durable = perTopicName(sub.Consumer, t)
			}
			specs = append(specs, consumerSpec{stream: stream, durable: durable, filters: []string{t}})
		}
	}
	return specs, nil
}

// perTopicName names the durable consumer of one topic on servers without
// multiple filter subjects: stable across restarts, distinct per topic.
func perTopicName(consumer, topic string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(topic))
	return fmt.Sprintf("%s_%08x", consumer, h.Sum32())
}

// supportsMultipleFilters reports whether a server version is 2.10 or later.
func supportsMultipleFilters(version string) bool {
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	if len(parts) < 2 {
		return false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return major > 2 || major == 2 && minor >= 10
}

// consumer creates (or updates) the JetStream consumer of spec.
func (b *Broker) consumer(ctx context.Context, spec consumerSpec) (jetstream.Consumer, error) {
	if spec.durable == "" {
		c, err := b.js.OrderedConsumer(ctx, spec.stream, jetstream.OrderedConsumerConfig{
			FilterSubjects: spec.filters,
			DeliverPolicy:  jetstream.DeliverNewPolicy,
		})
		if err != nil {
			return nil, fmt.Errorf("broadcast consumer on %s: %w", spec.stream, err)
		}
		return c, nil
	}
	cfg := jetstream.ConsumerConfig{
		Durable:     spec.durable,
		Description: "Mercato consumer " + spec.durable,
		// A consumer created for the first time starts at the oldest
		// retained event, so that services started together (mercato up)
		// miss nothing published before their consumer existed.
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       b.cfg.AckWait,
		// Unlimited: the events.Consumer decides when to give up and parks
		// the message itself, with a reason.
		MaxDeliver: -1,
	}
	if len(spec.filters) == 1 {
		cfg.FilterSubject = spec.filters[0]
	} else {
		cfg.FilterSubjects = spec.filters
	}
	c, err := b.js.CreateOrUpdateConsumer(ctx, spec.stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", spec.durable, spec.stream, err)
	}
	return c, nil
}

// Subscribe delivers the subscription's messages to handle, one at a time,
// until ctx ends. A durable subscription is a durable pull consumer shared
// by every subscriber with the same name; a broadcast one is an ordered
// consumer of this process alone, starting with the next message published.
// It returns an error only when the consumers cannot be set up; later
// failures (a restarted server, a deleted consumer) are repaired in place.
func (b *Broker) Subscribe(ctx context.Context, sub events.Subscription, handle func(context.Context, events.Delivery)) error {
	specs, err := b.specs(sub)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", sub.Consumer, err)
	}
	consumers := make([]jetstream.Consumer, len(specs))
	for i, spec := range specs {
		if consumers[i], err = b.consumer(ctx, spec); err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
	}

	// Deliveries are handled one at a time, across all of the subscription's
	// consumers, and not at all once ctx has ended.
	var mu sync.Mutex
	dispatch := func(m jetstream.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil {
			if sub.Consumer != "" {
				_ = m.Nak() // hand it straight to another instance
			}
			return
		}
		handle(ctx, &delivery{msg: m, broadcast: sub.Consumer == ""})
	}

	var wg sync.WaitGroup
	for i, spec := range specs {
		wg.Go(func() { b.consume(ctx, spec, consumers[i], dispatch) })
	}
	wg.Wait()
	// Make sure the server has dropped this subscriber's interest before
	// returning: a message it routed to a subscriber that is gone would wait
	// out AckWait before reaching another instance.
	if b.nc.IsConnected() {
		if err := b.nc.FlushTimeout(stopTimeout); err != nil {
			b.log.Debug("nats flush after unsubscribe", "err", err)
		}
	}
	return nil
}

// consume runs one consumer until ctx ends, recreating it whenever the
// server ends it.
func (b *Broker) consume(ctx context.Context, spec consumerSpec, c jetstream.Consumer, dispatch func(jetstream.Msg)) {
	log := b.log.With("stream", spec.stream, "consumer", spec.durable)
	backoff := time.Duration(0)
	for {
		if c != nil {
			cc, err := c.Consume(dispatch,
				jetstream.PullMaxMessages(b.cfg.PullBatch),
				jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
					if ctx.Err() == nil {
						log.Debug("nats consume", "err", err)
					}
				}))
			if err == nil {
				select {
				case <-ctx.Done():
					// Draining passes what is already buffered to dispatch,
					// which hands it back to the server at once; without a
					// server to drain against, just stop.
					if b.nc.IsConnected() {
						cc.Drain()
					} else {
						cc.Stop()
					}
					// Closed follows the in-flight handler; a consumer that
					// is resetting may take longer, and a shutdown must not
					// hang on it.
					select {
					case <-cc.Closed():
					case <-time.After(stopTimeout):
						log.Warn("nats consumer did not stop in time")
					}
					return
				case <-cc.Closed():
				}
			}
			if ctx.Err() != nil || b.nc.IsClosed() {
				return
			}
			log.Warn("nats consumer stopped; recreating it", "err", err)
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if b.nc.IsClosed() {
			return
		}
		var err error
		c, err = b.consumer(ctx, spec)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			if serr := b.ensureStreams(ctx); serr == nil {
				c, err = b.consumer(ctx, spec)
			}
		}
		if err != nil {
			log.Warn("nats consumer not recreated; retrying", "err", err, "retry_in", backoff)
			c = nil
			continue
		}
		backoff = 0
	}
}

// delivery is one JetStream message given to a subscriber.
type delivery struct {
	msg       jetstream.Msg
	broadcast bool
}

// Message returns the event with the adapter's own headers removed.
func (d *delivery) Message() events.Message {
	h := d.msg.Headers()
	m := events.Message{Topic: d.msg.Subject(), Body: d.msg.Data(), Headers: make(map[string]string, len(h))}
	for k, v := range h {
		if strings.HasPrefix(k, "Nats-") || k == headerEventID || len(v) == 0 {
			continue
		}
		m.Headers[k] = v[0]
	}
	m.ID = h.Get(headerEventID)
	if m.ID == "" {
		m.ID = h.Get(jetstream.MsgIDHeader)
	}
	return m
}

// Attempt is the server's delivery count of the message to this consumer.
func (d *delivery) Attempt() int {
	md, err := d.msg.Metadata()
	if err != nil || md.NumDelivered == 0 {
		return 1
	}
	return int(md.NumDelivered)
}

// Ack settles the message and waits for the server to confirm, so that an
// acknowledged message is never delivered again.
func (d *delivery) Ack(ctx context.Context) error {
	if d.broadcast {
		return nil // ordered consumers do not take acks
	}
	return d.msg.DoubleAck(ctx)
}

// Retry asks the server to deliver the message again after delay.
func (d *delivery) Retry(_ context.Context, delay time.Duration) error {
	if d.broadcast {
		return errors.New("natsbroker: a broadcast delivery cannot be retried")
	}
	if delay <= 0 {
		return d.msg.Nak()
	}
	return d.msg.NakWithDelay(delay)
}

// redact hides a password in a URL for messages.
func redact(url string) string {
	if at := strings.LastIndex(url, "@"); at >= 0 {
		if scheme := strings.Index(url, "://"); scheme >= 0 && scheme < at {
			return url[:scheme+3] + "***" + url[at:]
		}
	}
	return url
}
