package broker_test

import (
	"context"
	"testing"

	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/events/amqpbroker"
	"github.com/mercato/mercato/platform/events/broker"
	"github.com/mercato/mercato/platform/events/eventstest"
	"github.com/mercato/mercato/platform/events/natsbroker"
	"github.com/mercato/mercato/platform/platformtest"
)

func TestOpenChoosesTheAdapterByScheme(t *testing.T) {
	cases := []struct {
		name string
		url  string
		want string
	}{
		{"nats", platformtest.NATSURL(), "nats"},
		{"rabbitmq", platformtest.AMQPURL(), "amqp"},
		{"unknown scheme", "kafka://127.0.0.1:9092", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := platformtest.Config(t)
			cfg.Broker.URL = c.url
			ctx := context.Background()
			b, err := broker.Open(ctx, &cfg, platformtest.Logger(t))
			if c.want == "" {
				if err == nil || b != nil {
					t.Fatalf("Open(%s) = %v, %v; want an error and no broker", c.url, b, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%s): %v", c.url, err)
			}
			t.Cleanup(func() {
				var err error
				switch b := b.(type) {
				case *natsbroker.Broker:
					err = b.DeleteStreams(ctx)
				case *amqpbroker.Broker:
					err = b.DeleteAll(ctx)
				}
				if err != nil {
					t.Errorf("cleanup: %v", err)
				}
				_ = b.Close()
			})
			switch b.(type) {
			case *natsbroker.Broker:
				if c.want != "nats" {
					t.Fatalf("Open(%s) gave a NATS broker", c.url)
				}
			case *amqpbroker.Broker:
				if c.want != "amqp" {
					t.Fatalf("Open(%s) gave a RabbitMQ broker", c.url)
				}
			default:
				t.Fatalf("Open(%s) gave %T", c.url, b)
			}
			// It works end to end in the configured namespace.
			topic := events.Topic(cfg.Namespace, "order", "order.placed")
			sub := eventstest.Subscribe(t, b, events.Subscription{Consumer: "inventory", Topics: []string{topic}}, nil)
			eventstest.WaitReady(t, b, topic, sub)
		})
	}
}
