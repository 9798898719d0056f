package amqpbroker_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/events/amqpbroker"
	"github.com/mercato/mercato/platform/events/eventstest"
	"github.com/mercato/mercato/platform/platformtest"
)

// open connects to RabbitMQ at url and deletes what the broker declared when
// the test ends.
func open(t *testing.T, url, namespace string) *amqpbroker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), eventstest.Wait)
	defer cancel()
	b, err := amqpbroker.Open(ctx, amqpbroker.Config{URL: url, Namespace: namespace}, platformtest.Logger(t))
	if err != nil {
		t.Fatalf("open rabbitmq: %v (is rabbitmq-server running?)", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), eventstest.Wait)
		defer cancel()
		if err := b.DeleteAll(ctx); err != nil {
			t.Errorf("delete queues: %v", err)
		}
		_ = b.Close()
	})
	return b
}

func TestBrokerSuite(t *testing.T) {
	eventstest.RunBrokerSuite(t, func(t *testing.T, namespace string) events.Broker {
		t.Helper()
		return open(t, platformtest.AMQPURL(), namespace)
	})
}

// TestReconnectAfterConnectionLoss cuts the TCP connection under a running
// subscription and checks that publishing and consuming resume.
func TestReconnectAfterConnectionLoss(t *testing.T) {
	target, err := url.Parse(platformtest.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := eventstest.NewProxy(t, target.Host)
	viaProxy := *target
	viaProxy.Host = proxy.Addr()

	ns := platformtest.Namespace(t)
	b := open(t, viaProxy.String(), ns)
	topic := events.Topic(ns, "order", "order.placed")
	sub := eventstest.Subscribe(t, b, events.Subscription{Consumer: "inventory", Topics: []string{topic}}, nil)
	eventstest.WaitReady(t, b, topic, sub)

	proxy.Cut()

	// The first publish after the cut may fail while the loss is noticed; a
	// caller (the outbox relay) retries, and so does this test.
	m := eventstest.Msg(topic, 1)
	eventstest.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return b.Publish(ctx, m) == nil
	}, "a publish to succeed after the connection was cut")
	sub.WaitFor(t, m.ID)
}
