-- +goose Up
-- stock_version is the version of the last stock.changed event applied to
-- the variant, so an older event arriving late cannot undo a newer one.
ALTER TABLE variants ADD COLUMN stock_version bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE variants DROP COLUMN stock_version;
