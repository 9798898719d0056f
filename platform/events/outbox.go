package events

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/propagation"

	"github.com/mercato/mercato/platform/telemetry"
)

// Add writes envs to the outbox inside tx, the transaction that makes the
// state change they describe, so that the events exist exactly when the
// change does. The relay publishes them after commit, in the order given.
// The W3C trace context of ctx is stored with them so that consumers continue
// the producer's trace.
func Add(ctx context.Context, tx pgx.Tx, namespace string, envs ...Envelope) error {
	if len(envs) == 0 {
		return nil
	}
	carrier := propagation.MapCarrier{}
	telemetry.Propagator.Inject(ctx, carrier)
	headers, err := json.Marshal(carrier)
	if err != nil {
		return fmt.Errorf("outbox headers: %w", err)
	}
	ids := make([]string, len(envs))
	topics := make([]string, len(envs))
	payloads := make([][]byte, len(envs))
	for i, e := range envs {
		if e.ID == "" || e.Type == "" || e.Source == "" {
			return fmt.Errorf("outbox: event %q of type %q from %q needs an id, a type and a source", e.ID, e.Type, e.Source)
		}
		body, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode event %s %s: %w", e.Type, e.ID, err)
		}
		ids[i], topics[i], payloads[i] = e.ID, Topic(namespace, e.Source, e.Type), body
	}
	// One statement for the whole set: one round trip and one notification.
	// Ordering by ordinality makes seq follow the order of envs.
	_, err = tx.Exec(ctx, `
		INSERT INTO outbox (id, topic, payload, headers)
		SELECT id, topic, payload, $4::jsonb
		FROM unnest($1::text[], $2::text[], $3::bytea[]) WITH ORDINALITY AS e(id, topic, payload, n)
		ORDER BY n`, ids, topics, payloads, string(headers))
	if err != nil {
		return fmt.Errorf("write %d events to the outbox: %w", len(envs), err)
	}
	return nil
}
