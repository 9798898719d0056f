package platformtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/events/amqpbroker"
)

// CleanBroker removes what the namespace created on its broker when the test
// ends: on NATS its JetStream streams (their names start with the upper-cased
// namespace, which no other namespace shares), on RabbitMQ its exchange
// (broadcast queues are exclusive and go with their connections).
func CleanBroker(t testing.TB, cfg config.Config) {
	t.Helper()
	if url := cfg.BrokerURL(); strings.HasPrefix(url, "amqp") {
		t.Cleanup(func() {
			conn, err := amqp.Dial(url)
			if err != nil {
				t.Logf("broker cleanup: %v", err)
				return
			}
			defer conn.Close()
			ch, err := conn.Channel()
			if err != nil {
				t.Logf("broker cleanup: %v", err)
				return
			}
			if err := ch.ExchangeDelete(amqpbroker.ExchangeName(cfg.Namespace), false, false); err != nil {
				t.Logf("delete exchange: %v", err)
			}
		})
		return
	}
	t.Cleanup(func() {
		nc, err := nats.Connect(NATSURL(), nats.Timeout(5*time.Second))
		if err != nil {
			t.Logf("broker cleanup: %v", err)
			return
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Logf("broker cleanup: %v", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		prefix := strings.ToUpper(cfg.Namespace) + "_"
		names := js.StreamNames(ctx)
		var doomed []string
		for name := range names.Name() {
			if strings.HasPrefix(name, prefix) {
				doomed = append(doomed, name)
			}
		}
		for _, name := range doomed {
			if err := js.DeleteStream(ctx, name); err != nil {
				t.Logf("delete stream %s: %v", name, err)
			}
		}
	})
}
