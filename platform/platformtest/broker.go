package platformtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mercato/mercato/platform/config"
)

// CleanBroker deletes the namespace's JetStream streams from the test NATS
// server when the test ends. Stream names start with the upper-cased
// namespace, which no other namespace shares.
func CleanBroker(t testing.TB, cfg config.Config) {
	t.Helper()
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
