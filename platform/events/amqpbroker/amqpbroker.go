// Package amqpbroker is the RabbitMQ adapter of the events.Broker port: a
// durable topic exchange per namespace, a durable queue per consuming
// service, delayed retries through per-delay TTL queues that dead-letter back
// to the service's queue, a dead-letter queue per consumer, publisher
// confirms, and reconnection after a lost connection.
package amqpbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/mercato/mercato/platform/events"
)

// Config says where RabbitMQ is and how the namespace's queues are made.
type Config struct {
	// URL is the server, amqp://user:pass@host:5672/vhost or amqps://….
	URL string
	// Namespace scopes the exchange and the queues.
	Namespace string
	// Prefetch is how many unacknowledged deliveries a subscription holds.
	Prefetch int
	// QueueType of consumer and dead-letter queues: quorum (default, the
	// replicated type RabbitMQ recommends for data that must survive) or
	// classic.
	QueueType string
	// ConnectionName identifies the process in RabbitMQ's management UI.
	ConnectionName string
	// Heartbeat detects a dead connection; a lost one is redialled.
	Heartbeat time.Duration
}

func (c *Config) setDefaults() {
	if c.Prefetch <= 0 {
		c.Prefetch = 32
	}
	if c.QueueType == "" {
		c.QueueType = "quorum"
	}
	if c.ConnectionName == "" {
		c.ConnectionName = "mercato"
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 10 * time.Second
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	if !strings.HasPrefix(c.URL, "amqp://") && !strings.HasPrefix(c.URL, "amqps://") {
		return fmt.Errorf("amqpbroker: url %q must start with amqp:// or amqps://", redact(c.URL))
	}
	if c.Namespace == "" || strings.ContainsAny(c.Namespace, ".*# \t\r\n") {
		return fmt.Errorf("amqpbroker: namespace %q must be a single routing-key word", c.Namespace)
	}
	if c.QueueType != "quorum" && c.QueueType != "classic" {
		return fmt.Errorf("amqpbroker: queue type %q must be quorum or classic", c.QueueType)
	}
	return nil
}

// ExchangeName is the durable topic exchange of a namespace's events; the
// routing key of each message is its topic.
func ExchangeName(namespace string) string { return namespace + ".events" }

// QueueName is the durable queue of a consuming service.
func QueueName(namespace, consumer string) string { return namespace + "." + consumer }

// retryQueueName is the TTL queue that holds a consumer's retries of about
// tier milliseconds.
func retryQueueName(namespace, consumer string, tier int64) string {
	return QueueName(namespace, consumer) + ".retry." + strconv.FormatInt(tier, 10)
}

// Headers the adapter keeps on messages it moves between its own queues.
const (
	// headerAttempt counts deliveries across trips through retry queues.
	headerAttempt = "x-mercato-attempt"
	// headerTopic keeps the original topic once a retry has changed the
	// routing key to the consumer's queue.
	headerTopic = "x-mercato-topic"
	// headerDeliveryCount is set by quorum queues on a redelivery after a
	// consumer failed to settle the message (a crash, a lost connection).
	headerDeliveryCount = "x-delivery-count"
)

var _ events.Broker = (*Broker)(nil)

// Broker is a RabbitMQ connection for one namespace, redialled on demand
// after it is lost.
type Broker struct {
	cfg      Config
	log      *slog.Logger
	exchange string

	mu     sync.Mutex // guards conn and closed
	conn   *amqp.Connection
	closed bool

	pubMu sync.Mutex // one publisher at a time: keeps order and confirm sequence
	pub   *amqp.Channel

	declMu   sync.Mutex
	declared map[string]bool // queues this broker declared, for DeleteAll
}

// Open connects to RabbitMQ and declares the namespace's exchange.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Broker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Broker{
		cfg:      cfg,
		log:      log.With("broker", "amqp"),
		exchange: ExchangeName(cfg.Namespace),
		declared: map[string]bool{},
	}
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	if _, err := b.publisher(ctx); err != nil {
		_ = b.Close()
		return nil, err
	}
	return b, nil
}

// connection returns the open connection, dialling a new one if the last
// was lost.
func (b *Broker) connection() (*amqp.Connection, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errors.New("amqpbroker: broker is closed")
	}
	if b.conn != nil && !b.conn.IsClosed() {
		return b.conn, nil
	}
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(b.cfg.ConnectionName)
	conn, err := amqp.DialConfig(b.cfg.URL, amqp.Config{
		Heartbeat:  b.cfg.Heartbeat,
		Properties: props,
		Dial:       amqp.DefaultDial(10 * time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to rabbitmq at %s: %w", redact(b.cfg.URL), err)
	}
	if b.conn != nil {
		b.log.Info("rabbitmq reconnected")
	}
	b.conn = conn
	return conn, nil
}

// channel opens a channel on the current connection.
func (b *Broker) channel() (*amqp.Channel, error) {
	conn, err := b.connection()
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("rabbitmq channel: %w", err)
	}
	return ch, nil
}

// publisher returns the confirm-mode channel used for every publish; the
// caller holds pubMu.
func (b *Broker) publisher(ctx context.Context) (*amqp.Channel, error) {
	if b.pub != nil && !b.pub.IsClosed() {
		return b.pub, nil
	}
	ch, err := b.channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("rabbitmq confirm mode: %w", err)
	}
	if err := b.declareExchange(ch); err != nil {
		_ = ch.Close()
		return nil, err
	}
	b.pub = ch
	return ch, nil
}

// dropPublisher discards the publisher channel after a failure, whose
// confirm sequence can no longer be trusted.
func (b *Broker) dropPublisher() {
	if b.pub != nil {
		_ = b.pub.Close()
		b.pub = nil
	}
}

func (b *Broker) declareExchange(ch *amqp.Channel) error {
	if err := ch.ExchangeDeclare(b.exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", b.exchange, err)
	}
	return nil
}

// declareQueue declares a durable queue and remembers it for DeleteAll.
func (b *Broker) declareQueue(ch *amqp.Channel, name string, args amqp.Table) error {
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		return fmt.Errorf("declare queue %s: %w", name, err)
	}
	b.declMu.Lock()
	b.declared[name] = true
	b.declMu.Unlock()
	return nil
}

// declareDeadLetterQueue makes sure consumer's parked messages have a queue
// to land in before any is parked.
func (b *Broker) declareDeadLetterQueue(ch *amqp.Channel, consumer string) error {
	topic := events.DeadLetterTopic(b.cfg.Namespace, consumer)
	if err := b.declareQueue(ch, topic, amqp.Table{amqp.QueueTypeArg: b.cfg.QueueType}); err != nil {
		return err
	}
	if err := ch.QueueBind(topic, topic, b.exchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %s: %w", topic, err)
	}
	return nil
}

// Publish sends msgs in order as persistent messages and returns once
// RabbitMQ has confirmed every one.
func (b *Broker) Publish(ctx context.Context, msgs ...events.Message) error {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	pubs := make([]outgoing, len(msgs))
	for i, m := range msgs {
		pubs[i] = outgoing{exchange: b.exchange, key: m.Topic, msg: publishing(m, nil)}
	}
	return b.publish(ctx, pubs)
}

// outgoing is one message on its way to an exchange.
type outgoing struct {
	exchange, key string
	msg           amqp.Publishing
}

// publish sends pubs on the publisher channel and waits for their confirms;
// the caller holds pubMu.
func (b *Broker) publish(ctx context.Context, pubs []outgoing) error {
	ch, err := b.publisher(ctx)
	if err != nil {
		return err
	}
	confirms := make([]*amqp.DeferredConfirmation, 0, len(pubs))
	for _, p := range pubs {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, p.exchange, p.key, false, false, p.msg)
		if err != nil {
			b.dropPublisher()
			return fmt.Errorf("publish %s: %w", p.key, err)
		}
		confirms = append(confirms, dc)
	}
	for i, dc := range confirms {
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			b.dropPublisher()
			return fmt.Errorf("publish %s: waiting for confirm: %w", pubs[i].key, err)
		}
		if !ok {
			b.dropPublisher()
			return fmt.Errorf("publish %s: rabbitmq did not accept the message", pubs[i].key)
		}
	}
	return nil
}

// publishing turns m into a persistent AMQP message with extra headers.
func publishing(m events.Message, extra amqp.Table) amqp.Publishing {
	headers := make(amqp.Table, len(m.Headers)+len(extra))
	for k, v := range m.Headers {
		headers[k] = v
	}
	for k, v := range extra {
		headers[k] = v
	}
	return amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    m.ID,
		Timestamp:    time.Now().UTC(),
		Headers:      headers,
		Body:         m.Body,
	}
}

// DeadLetter publishes m to the consumer's dead-letter topic, whose durable
// queue keeps it until an operator acts, and waits for the confirm.
func (b *Broker) DeadLetter(ctx context.Context, consumer string, m events.Message, reason string) error {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	ch, err := b.publisher(ctx)
	if err != nil {
		return err
	}
	if err := b.declareDeadLetterQueue(ch, consumer); err != nil {
		b.dropPublisher()
		return err
	}
	topic := events.DeadLetterTopic(b.cfg.Namespace, consumer)
	msg := publishing(m, amqp.Table{
		events.HeaderDeadLetterReason:   reason,
		events.HeaderOriginalTopic:      m.Topic,
		events.HeaderDeadLetterConsumer: consumer,
	})
	if err := b.publish(ctx, []outgoing{{exchange: b.exchange, key: topic, msg: msg}}); err != nil {
		return fmt.Errorf("dead letter %s for %s: %w", m.ID, consumer, err)
	}
	return nil
}

// retry sends a copy of d to the consumer's queue after delay, through the
// TTL queue of delay's tier, and waits for the confirm.
func (b *Broker) retry(ctx context.Context, consumer string, m events.Message, attempt int, delay time.Duration) error {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	ch, err := b.publisher(ctx)
	if err != nil {
		return err
	}
	queue := QueueName(b.cfg.Namespace, consumer)
	msg := publishing(m, amqp.Table{headerAttempt: int64(attempt), headerTopic: m.Topic})
	key := queue
	if delay > 0 {
		ms, tier := tierOf(delay)
		key = retryQueueName(b.cfg.Namespace, consumer, tier)
		// The queue TTL bounds the tier; the message's own expiration is the
		// exact delay. RabbitMQ expires messages from the head of a queue, and
		// every message of a tier expires within (tier/2, tier], so none waits
		// more than one tier.
		if err := b.declareQueue(ch, key, amqp.Table{
			amqp.QueueTypeArg:           amqp.QueueTypeClassic,
			amqp.QueueMessageTTLArg:     tier,
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": queue,
		}); err != nil {
			b.dropPublisher()
			return err
		}
		msg.Expiration = strconv.FormatInt(ms, 10)
	}
	// The default exchange routes by queue name, so the retry reaches this
	// consumer only, not every service bound to the topic.
	return b.publish(ctx, []outgoing{{exchange: "", key: key, msg: msg}})
}

// tierOf rounds delay up to whole milliseconds and to the power-of-two tier
// whose retry queue holds it.
func tierOf(delay time.Duration) (ms, tier int64) {
	ms = int64((delay + time.Millisecond - 1) / time.Millisecond)
	tier = 1
	for tier < ms {
		tier <<= 1
	}
	return ms, tier
}

// Subscribe delivers the subscription's messages to handle, one at a time,
// until ctx ends. A durable subscription consumes the queue <ns>.<consumer>,
// shared by every instance of the service; a broadcast one gets its own
// exclusive, auto-deleted queue. It returns an error only when the first
// setup fails; after a lost connection it reconnects and resumes.
func (b *Broker) Subscribe(ctx context.Context, sub events.Subscription, handle func(context.Context, events.Delivery)) error {
	if len(sub.Topics) == 0 {
		return errors.New("subscribe: subscription has no topics")
	}
	log := b.log.With("consumer", sub.Consumer)
	backoff := time.Duration(0)
	for first := true; ; first = false {
		ch, deliveries, err := b.setup(sub)
		if err != nil {
			if first {
				return fmt.Errorf("subscribe %s: %w", sub.Consumer, err)
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			log.Warn("rabbitmq subscription not restored; retrying", "err", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return nil
			}
			continue
		}
		backoff = 0
		if !first {
			log.Info("rabbitmq subscription restored")
		}
		lost := b.deliver(ctx, ch, sub, deliveries, handle)
		if !lost {
			// Closing the channel returns prefetched, unhandled messages to
			// the queue for the other instances.
			_ = ch.Close()
			return nil
		}
		if b.isClosed() {
			return nil
		}
		log.Warn("rabbitmq subscription lost; reconnecting")
	}
}

// deliver hands deliveries to handle until ctx ends (false) or the channel
// is lost (true).
func (b *Broker) deliver(ctx context.Context, ch *amqp.Channel, sub events.Subscription, deliveries <-chan amqp.Delivery, handle func(context.Context, events.Delivery)) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case d, ok := <-deliveries:
			if !ok {
				return ctx.Err() == nil
			}
			handle(ctx, &delivery{b: b, d: d, consumer: sub.Consumer})
		}
	}
}

// setup opens a channel and declares what the subscription needs.
func (b *Broker) setup(sub events.Subscription) (*amqp.Channel, <-chan amqp.Delivery, error) {
	ch, err := b.channel()
	if err != nil {
		return nil, nil, err
	}
	deliveries, err := b.declareAndConsume(ch, sub)
	if err != nil {
		_ = ch.Close()
		return nil, nil, err
	}
	return ch, deliveries, nil
}

func (b *Broker) declareAndConsume(ch *amqp.Channel, sub events.Subscription) (<-chan amqp.Delivery, error) {
	if err := ch.Qos(b.cfg.Prefetch, 0, false); err != nil {
		return nil, fmt.Errorf("qos: %w", err)
	}
	if err := b.declareExchange(ch); err != nil {
		return nil, err
	}
	var queue string
	if sub.Consumer == "" {
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		if err != nil {
			return nil, fmt.Errorf("declare broadcast queue: %w", err)
		}
		queue = q.Name
	} else {
		queue = QueueName(b.cfg.Namespace, sub.Consumer)
		if err := b.declareQueue(ch, queue, amqp.Table{amqp.QueueTypeArg: b.cfg.QueueType}); err != nil {
			return nil, err
		}
		if err := b.declareDeadLetterQueue(ch, sub.Consumer); err != nil {
			return nil, err
		}
	}
	for _, t := range sub.Topics {
		if err := ch.QueueBind(queue, t, b.exchange, false, nil); err != nil {
			return nil, fmt.Errorf("bind %s to %s: %w", queue, t, err)
		}
	}
	deliveries, err := ch.Consume(queue, "", false, sub.Consumer == "", false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", queue, err)
	}
	return deliveries, nil
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Close closes the connection; subscriptions end.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.conn == nil || b.conn.IsClosed() {
		return nil
	}
	return b.conn.Close()
}

// DeleteAll removes the queues this broker declared and the namespace's
// exchange; tests and throwaway platforms call it to clean up. Queues that
// only other processes declared are left alone, since RabbitMQ cannot list
// them without the management plugin.
func (b *Broker) DeleteAll(ctx context.Context) error {
	conn, err := amqp.DialConfig(b.cfg.URL, amqp.Config{Dial: amqp.DefaultDial(10 * time.Second)})
	if err != nil {
		return fmt.Errorf("connect to rabbitmq: %w", err)
	}
	defer conn.Close()
	b.declMu.Lock()
	names := make([]string, 0, len(b.declared))
	for n := range b.declared {
		names = append(names, n)
	}
	b.declMu.Unlock()
	var errs []error
	// A failed delete closes its channel, so each gets a fresh one.
	run := func(what string, fn func(ch *amqp.Channel) error) {
		if ctx.Err() != nil {
			return
		}
		ch, err := conn.Channel()
		if err != nil {
			errs = append(errs, err)
			return
		}
		defer ch.Close()
		if err := fn(ch); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", what, err))
		}
	}
	for _, n := range names {
		run(n, func(ch *amqp.Channel) error { _, err := ch.QueueDelete(n, false, false, false); return err })
	}
	run(b.exchange, func(ch *amqp.Channel) error { return ch.ExchangeDelete(b.exchange, false, false) })
	return errors.Join(errs...)
}

// delivery is one AMQP delivery given to a subscriber.
type delivery struct {
	b        *Broker
	d        amqp.Delivery
	consumer string // empty for broadcast
}

// Message returns the event with RabbitMQ's and the adapter's bookkeeping
// headers removed and the original topic restored after a retry.
func (d *delivery) Message() events.Message {
	m := events.Message{Topic: d.d.RoutingKey, ID: d.d.MessageId, Body: d.d.Body, Headers: make(map[string]string, len(d.d.Headers))}
	for k, v := range d.d.Headers {
		switch {
		case k == headerTopic:
			if s, ok := v.(string); ok {
				m.Topic = s
			}
		case k == headerAttempt || k == headerDeliveryCount || k == "x-death" ||
			strings.HasPrefix(k, "x-first-death-") || strings.HasPrefix(k, "x-last-death-"):
		default:
			m.Headers[k] = headerString(v)
		}
	}
	return m
}

// Attempt counts trips through the retry queues plus redeliveries after a
// consumer failed to settle the message.
func (d *delivery) Attempt() int {
	attempt := max(headerInt(d.d.Headers[headerAttempt]), 1)
	return attempt + headerInt(d.d.Headers[headerDeliveryCount])
}

// Ack settles the delivery.
func (d *delivery) Ack(context.Context) error { return d.d.Ack(false) }

// Retry republishes the message through the retry queue of delay's tier
// with its attempt count raised, then settles this delivery. The consumer
// keeps working meanwhile: nothing waits for the delay.
func (d *delivery) Retry(ctx context.Context, delay time.Duration) error {
	if d.consumer == "" {
		return errors.New("amqpbroker: a broadcast delivery cannot be retried")
	}
	if err := d.b.retry(ctx, d.consumer, d.Message(), d.Attempt()+1, delay); err != nil {
		// Back to the queue at once rather than held unsettled: an unsettled
		// delivery would block one prefetch slot until the channel closes.
		_ = d.d.Nack(false, true)
		return err
	}
	return d.d.Ack(false)
}

// headerInt reads an AMQP header number, whichever integer type the sender
// used.
func headerInt(v any) int {
	switch n := v.(type) {
	case int:
		return n
	case int8:
		return int(n)
	case int16:
		return int(n)
	case int32:
		return int(n)
	case int64:
		return int(n)
	case uint8:
		return int(n)
	case uint16:
		return int(n)
	case uint32:
		return int(n)
	case string:
		i, _ := strconv.Atoi(n)
		return i
	default:
		return 0
	}
}

func headerString(v any) string {
	switch s := v.(type) {
	case string:
		return s
	case []byte:
		return string(s)
	default:
		return fmt.Sprint(v)
	}
}

// sleep waits d and reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// redact hides the password of an AMQP URL for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
