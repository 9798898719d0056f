-- +goose Up
CREATE TABLE customers (
    id            text PRIMARY KEY,
    -- email is stored normalised (trimmed, lower case); it is the login.
    email         text NOT NULL UNIQUE,
    name          text NOT NULL,
    password_hash text NOT NULL,
    is_admin      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE addresses (
    id          text PRIMARY KEY,
    customer_id text NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    name        text NOT NULL,
    line1       text NOT NULL,
    line2       text NOT NULL DEFAULT '',
    city        text NOT NULL,
    region      text NOT NULL DEFAULT '',
    postal_code text NOT NULL,
    country     char(2) NOT NULL,
    phone       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX addresses_customer_idx ON addresses (customer_id, created_at);

-- Signing keys for tokens. The newest key signs; older keys stay published
-- in the JWKS until every token they signed has expired.
CREATE TABLE signing_keys (
    kid         text PRIMARY KEY,
    algorithm   text NOT NULL,
    private_key bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- retired_at is when a newer key took over signing.
    retired_at  timestamptz
);

-- +goose Down
DROP TABLE signing_keys;
DROP TABLE addresses;
DROP TABLE customers;
