-- +goose Up
-- The inventory's source of truth. Redis holds the live counters that
-- reservations change (docs/adr/0013, 0014); everything here is written
-- either synchronously (commits, adjustments) or by the ledger writer from
-- the Redis stream, and Redis is rebuilt from it when it loses data.

-- redis_epoch numbers the generations of the Redis state. A rebuild bumps
-- it; every transaction that depends on Redis state checks it under a
-- shared advisory lock that the rebuild takes exclusively.
CREATE TABLE redis_epoch (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch bigint NOT NULL
);
INSERT INTO redis_epoch (singleton, epoch) VALUES (true, 0);

-- stock is the aggregate of the ledger per variant and location.
-- committed and on_hand only change synchronously (commits and admin
-- adjustments are written here before Redis answers), so the check below is
-- the last line against overselling even if Redis were wrong. reserved
-- arrives asynchronously and may briefly lag.
CREATE TABLE stock (
    variant_id text NOT NULL,
    location text NOT NULL,
    on_hand bigint NOT NULL DEFAULT 0,
    reserved bigint NOT NULL DEFAULT 0,
    committed bigint NOT NULL DEFAULT 0,
    -- adjust_seq numbers the admin adjustments of this row; Redis records
    -- the last one it applied.
    adjust_seq bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (variant_id, location),
    CONSTRAINT stock_never_oversold CHECK (on_hand >= 0 AND committed >= 0 AND committed <= on_hand)
);

-- variants keeps what consumers were last told about each variant, so that
-- events carry growing versions and a rebuild tells them what changed.
CREATE TABLE variants (
    variant_id text PRIMARY KEY,
    version bigint NOT NULL DEFAULT 0,
    published_version bigint NOT NULL DEFAULT 0,
    published_available bigint
);

CREATE TABLE reservations (
    id text PRIMARY KEY,
    customer_id text NOT NULL DEFAULT '',
    idempotency_key text NOT NULL,
    status text NOT NULL CHECK (status IN ('held', 'committed', 'released', 'expired')),
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    ended_at timestamptz
);
CREATE INDEX reservations_held ON reservations (expires_at) WHERE status = 'held';
CREATE INDEX reservations_ended ON reservations (ended_at) WHERE status <> 'held';
CREATE INDEX reservations_key ON reservations (idempotency_key);
CREATE INDEX reservations_customer ON reservations (customer_id)
    WHERE customer_id <> '' AND status IN ('held', 'committed');

CREATE TABLE reservation_items (
    reservation_id text NOT NULL REFERENCES reservations (id),
    variant_id text NOT NULL,
    location text NOT NULL,
    quantity bigint NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, variant_id)
);

-- ledger has one row per change of one variant at one location. A change
-- is named by change_key (adjustment:<seq>, reservation:<id>, commit:<id>,
-- release:<id>, expiry:<id>), so writing it twice — a redelivered stream
-- entry, or a commit written synchronously and later seen in the stream —
-- inserts nothing; rows from the stream also carry their entry id, unique
-- within an epoch.
CREATE TABLE ledger (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    op text NOT NULL CHECK (op IN ('adjustment', 'reservation', 'commit', 'release', 'expiry')),
    change_key text NOT NULL,
    variant_id text NOT NULL,
    location text NOT NULL,
    on_hand_delta bigint NOT NULL DEFAULT 0,
    reserved_delta bigint NOT NULL DEFAULT 0,
    committed_delta bigint NOT NULL DEFAULT 0,
    reservation_id text,
    customer_id text NOT NULL DEFAULT '',
    epoch bigint,
    stream_id text,
    changed_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_change_once UNIQUE (change_key, variant_id, location),
    CONSTRAINT ledger_entry_once UNIQUE (epoch, stream_id, variant_id, location)
);
CREATE INDEX ledger_variant ON ledger (variant_id, id);

-- +goose StatementBegin
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the stock ledger is append-only';
END
$$;
-- +goose StatementEnd
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- +goose Down
DROP TABLE ledger;
DROP FUNCTION ledger_append_only();
DROP TABLE reservation_items;
DROP TABLE reservations;
DROP TABLE variants;
DROP TABLE stock;
DROP TABLE redis_epoch;
