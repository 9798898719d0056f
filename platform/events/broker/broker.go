// Package broker opens the events.Broker adapter that a configuration names.
// It lives apart from package events because the adapters import events (for
// its Message and Delivery types), so events cannot import them back.
package broker

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/events/amqpbroker"
	"github.com/mercato/mercato/platform/events/natsbroker"
)

// Open connects to the broker at cfg.BrokerURL() in cfg.Namespace, choosing
// the adapter by the URL's scheme: nats:// (or tls://) for NATS JetStream,
// amqp:// or amqps:// for RabbitMQ.
func Open(ctx context.Context, cfg *config.Config, log *slog.Logger) (events.Broker, error) {
	raw := cfg.BrokerURL()
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("broker url: %w", err)
	}
	switch u.Scheme {
	case "nats", "tls":
		b, err := natsbroker.Open(ctx, natsbroker.Config{
			URL:       raw,
			Namespace: cfg.Namespace,
			Replicas:  cfg.Broker.Replicas,
		}, log)
		if err != nil {
			return nil, err // not a typed nil inside the interface
		}
		return b, nil
	case "amqp", "amqps":
		b, err := amqpbroker.Open(ctx, amqpbroker.Config{
			URL:       raw,
			Namespace: cfg.Namespace,
		}, log)
		if err != nil {
			return nil, err
		}
		return b, nil
	default:
		return nil, fmt.Errorf("broker url %s: scheme must be nats://, amqp:// or amqps://", u.Redacted())
	}
}
