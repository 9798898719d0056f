-- The transactional outbox and the consumer dedupe table that every service
-- database using events carries. Versions are recorded in
-- goose_platform_events, apart from the service's own migrations.

-- +goose Up
CREATE TABLE outbox (
    -- seq orders the relay: committed rows are published in insert order.
    seq        bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id         text PRIMARY KEY,
    topic      text        NOT NULL,
    -- payload is the encoded envelope, byte for byte what goes on the wire.
    payload    bytea       NOT NULL,
    headers    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- +goose StatementBegin
CREATE FUNCTION mercato_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The channel is the same in every database: LISTEN/NOTIFY is scoped to
    -- one database, and each service has its own.
    PERFORM pg_notify('mercato_outbox', '');
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- A statement-level trigger wakes the relay once per insert statement; the
-- notification is delivered at commit and never for a rolled-back insert.
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION mercato_outbox_notify();

CREATE TABLE processed_events (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Pruning old dedupe rows scans by age.
CREATE INDEX processed_events_processed_at ON processed_events (processed_at);

-- +goose Down
DROP TABLE processed_events;
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION mercato_outbox_notify();
DROP TABLE outbox;
