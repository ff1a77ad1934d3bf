-- The same additions as the PostgreSQL migration of this version. The
-- decimals are exact TEXT here, so the *_scale columns only mirror the
-- PostgreSQL layout (they agree with the text).

ALTER TABLE orders ADD COLUMN sr_id TEXT;
ALTER TABLE orders ADD COLUMN market_base TEXT;
ALTER TABLE orders ADD COLUMN market_quote TEXT;
ALTER TABLE orders ADD COLUMN price_scale INTEGER;
ALTER TABLE orders ADD COLUMN quantity_scale INTEGER;
ALTER TABLE orders ADD COLUMN remaining_qty_scale INTEGER;
ALTER TABLE orders ADD COLUMN created_at_ns INTEGER;
ALTER TABLE orders ADD COLUMN updated_at_ns INTEGER;

ALTER TABLE trades ADD COLUMN market_base TEXT;
ALTER TABLE trades ADD COLUMN market_quote TEXT;
ALTER TABLE trades ADD COLUMN price_scale INTEGER;
ALTER TABLE trades ADD COLUMN quantity_scale INTEGER;
ALTER TABLE trades ADD COLUMN quote_amount_scale INTEGER;
ALTER TABLE trades ADD COLUMN executed_at_ns INTEGER;

ALTER TABLE balances ADD COLUMN available_scale INTEGER;
ALTER TABLE balances ADD COLUMN frozen_scale INTEGER;

ALTER TABLE epochs ADD COLUMN started_at_ns INTEGER;
ALTER TABLE epochs ADD COLUMN completed_at_ns INTEGER;

CREATE TABLE orphan_trades (
    id TEXT PRIMARY KEY NOT NULL,
    batch_id INTEGER NOT NULL,
    market TEXT NOT NULL,
    taker_order_id TEXT NOT NULL,
    maker_order_id TEXT NOT NULL,
    taker_user_id TEXT NOT NULL,
    maker_user_id TEXT NOT NULL,
    price TEXT NOT NULL,
    quantity TEXT NOT NULL,
    quote_amount TEXT NOT NULL,
    taker_side TEXT NOT NULL,
    matcher_node BLOB NOT NULL,
    executed_at TEXT NOT NULL,
    market_base TEXT,
    market_quote TEXT,
    price_scale INTEGER,
    quantity_scale INTEGER,
    quote_amount_scale INTEGER,
    executed_at_ns INTEGER,
    aof_position INTEGER NOT NULL
);

CREATE TABLE persistence_checkpoint (
    singleton INTEGER PRIMARY KEY DEFAULT 1 CHECK (singleton = 1),
    aof_position INTEGER NOT NULL CHECK (aof_position >= 0),
    epoch_id INTEGER,
    flushed_at TEXT NOT NULL
);
