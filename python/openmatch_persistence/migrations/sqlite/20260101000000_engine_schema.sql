-- The engine schema in SQLite's dialect: the same tables and columns.
-- Decimals are TEXT (a NUMERIC column would turn them into floats), UUIDs are
-- lowercase hyphenated TEXT, byte strings BLOB, timestamps RFC 3339 TEXT in
-- UTC with 9 fractional digits ("2026-02-27T21:35:25.123456789Z", which sorts
-- in time order).
CREATE TABLE orders (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    market TEXT NOT NULL,
    side TEXT NOT NULL,
    order_type TEXT NOT NULL,
    status TEXT NOT NULL,
    price TEXT,
    quantity TEXT NOT NULL,
    remaining_qty TEXT NOT NULL,
    batch_id INTEGER,
    sequence INTEGER NOT NULL DEFAULT 0,
    origin_node BLOB NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX idx_orders_market_status ON orders(market, status);
CREATE INDEX idx_orders_user ON orders(user_id, market);

CREATE TABLE trades (
    id TEXT PRIMARY KEY NOT NULL,
    batch_id INTEGER NOT NULL,
    market TEXT NOT NULL,
    taker_order_id TEXT NOT NULL REFERENCES orders(id),
    maker_order_id TEXT NOT NULL REFERENCES orders(id),
    taker_user_id TEXT NOT NULL,
    maker_user_id TEXT NOT NULL,
    price TEXT NOT NULL,
    quantity TEXT NOT NULL,
    quote_amount TEXT NOT NULL,
    taker_side TEXT NOT NULL,
    matcher_node BLOB NOT NULL,
    executed_at TEXT NOT NULL
);
CREATE INDEX idx_trades_market ON trades(market, executed_at DESC);
CREATE INDEX idx_trades_batch ON trades(batch_id);

CREATE TABLE balances (
    user_id TEXT NOT NULL,
    asset TEXT NOT NULL,
    available TEXT NOT NULL DEFAULT '0',
    frozen TEXT NOT NULL DEFAULT '0',
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000000Z', 'now')),
    PRIMARY KEY (user_id, asset)
);

CREATE TABLE epochs (
    epoch_id INTEGER PRIMARY KEY,
    phase TEXT NOT NULL,
    batch_hash BLOB,
    result_hash BLOB,
    trade_count INTEGER DEFAULT 0,
    started_at TEXT NOT NULL,
    completed_at TEXT
);
