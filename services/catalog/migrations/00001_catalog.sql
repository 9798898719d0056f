-- +goose Up
CREATE TABLE categories (
    id          text PRIMARY KEY,
    slug        text NOT NULL UNIQUE,
    name        text NOT NULL,
    parent_id   text REFERENCES categories (id) ON DELETE RESTRICT,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    id          text PRIMARY KEY,
    title       text NOT NULL,
    description text NOT NULL DEFAULT '',
    images      jsonb NOT NULL DEFAULT '[]',
    -- version grows with every change to the product or its variants; it is
    -- the ETag and orders cache fills against invalidations.
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    search      tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english'::regconfig, title), 'A') ||
        setweight(to_tsvector('english'::regconfig, description), 'B')
    ) STORED
);
CREATE INDEX products_search_idx ON products USING gin (search);

CREATE TABLE variants (
    id             text PRIMARY KEY,
    product_id     text NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    sku            text NOT NULL UNIQUE,
    title          text NOT NULL,
    price_amount   bigint NOT NULL CHECK (price_amount >= 0),
    price_currency char(3) NOT NULL,
    in_stock       boolean NOT NULL DEFAULT true,
    position       int NOT NULL
);
CREATE INDEX variants_product_idx ON variants (product_id, position);

CREATE TABLE product_categories (
    product_id  text NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    category_id text NOT NULL REFERENCES categories (id) ON DELETE RESTRICT,
    position    int NOT NULL,
    PRIMARY KEY (product_id, category_id)
);
-- Lists filtered by category walk this index newest first.
CREATE INDEX product_categories_category_idx ON product_categories (category_id, product_id DESC);

-- +goose Down
DROP TABLE product_categories;
DROP TABLE variants;
DROP TABLE products;
DROP TABLE categories;
