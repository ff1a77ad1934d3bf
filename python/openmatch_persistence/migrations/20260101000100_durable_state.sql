-- What the engine's in-memory state needs beyond the engine schema so that a
-- flushed row rebuilds the exact engine value (docs/storage.md, "Schema").
--
-- NUMERIC(28,8) pads every value to 8 places ("1.5" reads back "1.50000000"),
-- so each decimal keeps its original scale beside it; TIMESTAMPTZ holds
-- microseconds, so each timestamp keeps its exact nanoseconds since the Unix
-- epoch beside it; a market symbol cannot be split back when the base holds
-- '/', so base and quote are kept apart. The new columns are nullable because
-- rows written by other tools before this migration have no values for them.

ALTER TABLE orders
    ADD COLUMN sr_id UUID,
    ADD COLUMN market_base VARCHAR(20),
    ADD COLUMN market_quote VARCHAR(20),
    ADD COLUMN price_scale SMALLINT,
    ADD COLUMN quantity_scale SMALLINT,
    ADD COLUMN remaining_qty_scale SMALLINT,
    ADD COLUMN created_at_ns BIGINT,
    ADD COLUMN updated_at_ns BIGINT;

ALTER TABLE trades
    ADD COLUMN market_base VARCHAR(20),
    ADD COLUMN market_quote VARCHAR(20),
    ADD COLUMN price_scale SMALLINT,
    ADD COLUMN quantity_scale SMALLINT,
    ADD COLUMN quote_amount_scale SMALLINT,
    ADD COLUMN executed_at_ns BIGINT;

ALTER TABLE balances
    ADD COLUMN available_scale SMALLINT,
    ADD COLUMN frozen_scale SMALLINT;

ALTER TABLE epochs
    ADD COLUMN started_at_ns BIGINT,
    ADD COLUMN completed_at_ns BIGINT;

-- Trades whose taker or maker order is not in `orders` (a consistency fault
-- upstream): kept here, whole, instead of failing every flush on the foreign
-- key; moved into `trades` by the first flush that finds both orders.
CREATE TABLE orphan_trades (
    id UUID PRIMARY KEY,
    batch_id BIGINT NOT NULL,
    market VARCHAR(20) NOT NULL,
    taker_order_id UUID NOT NULL,
    maker_order_id UUID NOT NULL,
    taker_user_id UUID NOT NULL,
    maker_user_id UUID NOT NULL,
    price NUMERIC(28,8) NOT NULL,
    quantity NUMERIC(28,8) NOT NULL,
    quote_amount NUMERIC(28,8) NOT NULL,
    taker_side VARCHAR(4) NOT NULL,
    matcher_node BYTEA NOT NULL,
    executed_at TIMESTAMPTZ NOT NULL,
    market_base VARCHAR(20),
    market_quote VARCHAR(20),
    price_scale SMALLINT,
    quantity_scale SMALLINT,
    quote_amount_scale SMALLINT,
    executed_at_ns BIGINT,
    aof_position BIGINT NOT NULL
);

-- The AOF position (and the newest epoch) that the rows in this database
-- cover. One row, written in the same transaction as the rows of each flush.
CREATE TABLE persistence_checkpoint (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    aof_position BIGINT NOT NULL CHECK (aof_position >= 0),
    epoch_id BIGINT,
    flushed_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
