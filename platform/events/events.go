// Package events carries Mercato's domain events: the JSON envelope from the
// public API contract, a transactional outbox written in the same database
// transaction as the state change, a relay that forwards the outbox to the
// broker, and consumers that deduplicate by event id, retry with backoff and
// park poison messages in a dead-letter stream. Brokers are adapters behind
// the Broker port (NATS JetStream and RabbitMQ), and all pass one test suite.
package events

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/mercato/mercato/platform/id"
)

// Envelope is an event as it travels: {id, type, source, time, subject, data}.
// Type is "<aggregate>.<verb>" such as "order.placed" or "product.changed";
// Source is the publishing service; Subject is the id of the aggregate the
// event is about.
type Envelope struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Source  string          `json:"source"`
	Time    time.Time       `json:"time"`
	Subject string          `json:"subject"`
	Data    json.RawMessage `json:"data"`
}

// New builds an envelope with a fresh id and the current time.
func New(source, typ, subject string, data any) (Envelope, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Envelope{}, fmt.Errorf("event %s data: %w", typ, err)
	}
	return Envelope{ID: id.New("evt"), Type: typ, Source: source, Time: time.Now().UTC().Truncate(time.Microsecond), Subject: subject, Data: raw}, nil
}

// Decode unmarshals the event's data into v.
func (e Envelope) Decode(v any) error {
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("event %s %s data: %w", e.Type, e.ID, err)
	}
	return nil
}

// Topic is the broker subject of an event type from a source service in a
// namespace: <namespace>.<service>.<event>, where <event> is the type without
// a leading "<service>." — so order.placed from order is mercato.order.placed
// and product.changed from catalog is mercato.catalog.product.changed.
func Topic(namespace, source, typ string) string {
	return namespace + "." + source + "." + strings.TrimPrefix(typ, source+".")
}

// DeadLetterTopic is where a consumer's poison messages are parked.
func DeadLetterTopic(namespace, consumer string) string {
	return namespace + "_dlq." + consumer
}

// Message is an event on the wire: the encoded envelope plus transport
// headers such as the W3C traceparent.
type Message struct {
	// Topic is the full broker subject (see Topic).
	Topic string
	// ID is the event id; brokers that deduplicate on publish use it.
	ID      string
	Body    []byte
	Headers map[string]string
}

// Delivery is one delivery of a message to a subscriber.
type Delivery interface {
	Message() Message
	// Attempt is 1 on the first delivery and grows with each redelivery.
	Attempt() int
	// Ack settles the message: it will not be delivered to this subscription
	// again.
	Ack(ctx context.Context) error
	// Retry asks for the message to be delivered again after delay.
	Retry(ctx context.Context, delay time.Duration) error
}

// Subscription says what a subscriber wants.
type Subscription struct {
	// Consumer is the durable name shared by every instance of a consuming
	// service: each message goes to one of them and survives restarts. Empty
	// means a broadcast subscription: every instance gets every message
	// published while it is subscribed (used for cache invalidation).
	Consumer string
	// Topics lists the exact topics to receive.
	Topics []string
}

// Broker is the port every broker adapter implements.
type Broker interface {
	// Publish returns once the broker has durably accepted every message.
	Publish(ctx context.Context, msgs ...Message) error
	// Subscribe delivers matching messages to handle until ctx ends. handle
	// must settle each delivery with Ack or Retry.
	Subscribe(ctx context.Context, sub Subscription, handle func(context.Context, Delivery)) error
	// DeadLetter parks m in the consumer's dead-letter stream with the reason.
	DeadLetter(ctx context.Context, consumer string, m Message, reason string) error
	// Close releases the connection.
	Close() error
}
