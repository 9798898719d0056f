package natsbroker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/events/eventstest"
	"github.com/mercato/mercato/platform/events/natsbroker"
	"github.com/mercato/mercato/platform/platformtest"
)

// opener connects to the NATS server at url and deletes the namespace's
// streams when the test ends.
func opener(url string) eventstest.OpenFunc {
	return func(t *testing.T, namespace string) events.Broker {
		t.Helper()
		return open(t, url, namespace)
	}
}

func open(t *testing.T, url, namespace string) *natsbroker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), eventstest.Wait)
	defer cancel()
	b, err := natsbroker.Open(ctx, natsbroker.Config{URL: url, Namespace: namespace}, platformtest.Logger(t))
	if err != nil {
		t.Fatalf("open nats at %s: %v (is nats-server -js running?)", url, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), eventstest.Wait)
		defer cancel()
		if err := b.DeleteStreams(ctx); err != nil {
			t.Errorf("delete streams: %v", err)
		}
		_ = b.Close()
	})
	return b
}

func TestBrokerSuite(t *testing.T) {
	eventstest.RunBrokerSuite(t, opener(platformtest.NATSURL()))
}

// TestBrokerSuiteEmbedded runs the contract against the embedded server that
// `mercato up` uses, a newer nats-server than a machine may have installed.
func TestBrokerSuiteEmbedded(t *testing.T) {
	url, shutdown, err := natsbroker.StartEmbedded(t.TempDir(), platformtest.Logger(t))
	if err != nil {
		t.Fatalf("start embedded: %v", err)
	}
	t.Cleanup(shutdown)
	eventstest.RunBrokerSuite(t, opener(url))
}

func TestEmbeddedServer(t *testing.T) {
	dir := t.TempDir()
	url, shutdown, err := natsbroker.StartEmbedded(dir, platformtest.Logger(t))
	if err != nil {
		t.Fatalf("start embedded: %v", err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			shutdown()
		}
	})
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":4222") {
		t.Errorf("embedded url %q, want nats://127.0.0.1 on a port other than 4222", url)
	}

	ns := platformtest.Namespace(t)
	b, err := natsbroker.Open(context.Background(), natsbroker.Config{URL: url, Namespace: ns}, platformtest.Logger(t))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer b.Close()
	topic := events.Topic(ns, "catalog", "product.changed")
	sub := eventstest.Subscribe(t, b, events.Subscription{Consumer: "search", Topics: []string{topic}}, nil)
	m := eventstest.Msg(topic, 1)
	if err := b.Publish(context.Background(), m); err != nil {
		t.Fatalf("publish: %v", err)
	}
	sub.WaitFor(t, m.ID)
	sub.Stop(t)
	_ = b.Close()

	shutdown()
	stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if b, err := natsbroker.Open(ctx, natsbroker.Config{URL: url, Namespace: ns}, platformtest.Logger(t)); err == nil {
		_ = b.Close()
		t.Errorf("connected to %s after shutdown", url)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  natsbroker.Config
		ok   bool
	}{
		{"plain", natsbroker.Config{URL: "nats://127.0.0.1:4222", Namespace: "mercato"}, true},
		{"tls", natsbroker.Config{URL: "tls://nats.example:4222", Namespace: "mercato"}, true},
		{"amqp url", natsbroker.Config{URL: "amqp://127.0.0.1", Namespace: "mercato"}, false},
		{"dotted namespace", natsbroker.Config{URL: "nats://127.0.0.1:4222", Namespace: "a.b"}, false},
		{"no namespace", natsbroker.Config{URL: "nats://127.0.0.1:4222"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.cfg.Validate(); (err == nil) != c.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, c.ok)
			}
		})
	}
}

func TestStreamNames(t *testing.T) {
	if got := natsbroker.StreamName("t_ab12"); got != "T_AB12_EVENTS" {
		t.Errorf("StreamName = %q", got)
	}
	if got := natsbroker.DeadLetterStreamName("mercato"); got != "MERCATO_DLQ" {
		t.Errorf("DeadLetterStreamName = %q", got)
	}
}
