package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/events/eventstest"
)

func TestListenerDeliversEveryEventToEveryInstance(t *testing.T) {
	w := newWorld(t)
	runRelay(t, w, w.broker, w.cfg.Broker, prometheus.NewRegistry())

	instances := make([]*counter, 2)
	regs := make([]*prometheus.Registry, 2)
	for i := range instances {
		got, reg := &counter{}, prometheus.NewRegistry()
		instances[i], regs[i] = got, reg
		l := events.NewListener(openBroker(t, w.ns), w.ns, nilLogger(), reg)
		l.On("catalog", "product.changed", func(ctx context.Context, e events.Envelope) error {
			got.inc(e.ID)
			if e.Subject == "prod_fail" {
				return errors.New("cache unavailable")
			}
			return nil
		})
		background(t, "listener", l.Run)
	}
	waitListening(t, w, instances)

	failing := productChanged(t, "prod_fail")
	ok := productChanged(t, "prod_ok")
	w.commit(t, context.Background(), failing, ok)
	for i, got := range instances {
		eventstest.Eventually(t, func() bool { return got.of(ok.ID) == 1 }, "instance %d to receive the event", i)
		if n := got.of(failing.ID); n != 1 {
			t.Errorf("instance %d handled the failing event %d times, want once (no retry)", i, n)
		}
		if n := metric(t, regs[i], "mercato_events_listener_handled_total", "result", "error"); n != 1 {
			t.Errorf("instance %d error metric %v, want 1", i, n)
		}
	}
}

func productChanged(t *testing.T, subject string) events.Envelope {
	t.Helper()
	e, err := events.New("catalog", "product.changed", subject, map[string]string{"sku": subject})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// waitListening publishes probe events straight to the broker until every
// listener has received one: a broadcast subscription sees only what is
// published after it is in place.
func waitListening(t *testing.T, w world, instances []*counter) {
	t.Helper()
	eventstest.Eventually(t, func() bool {
		probe := productChanged(t, "probe")
		probe.ID = "probe_" + probe.ID
		body, err := json.Marshal(probe)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.broker.Publish(context.Background(), events.Message{Topic: events.Topic(w.ns, "catalog", "product.changed"), ID: probe.ID, Body: body}); err != nil {
			t.Fatalf("publish probe: %v", err)
		}
		deadline := time.Now().Add(200 * time.Millisecond)
		for time.Now().Before(deadline) {
			all := true
			for _, got := range instances {
				all = all && got.probes() > 0
			}
			if all {
				return true
			}
			time.Sleep(5 * time.Millisecond)
		}
		return false
	}, "every listener to be subscribed")
}

// probes counts the probe events a counter saw.
func (c *counter) probes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for id, k := range c.n {
		if strings.HasPrefix(id, "probe_") {
			n += k
		}
	}
	return n
}
