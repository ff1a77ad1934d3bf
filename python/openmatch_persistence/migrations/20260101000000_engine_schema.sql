CREATE TABLE orders (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL,
    market VARCHAR(20) NOT NULL,  -- "BTC/USDT"
    side VARCHAR(4) NOT NULL,     -- "BUY" / "SELL"
    order_type VARCHAR(10) NOT NULL,
    status VARCHAR(20) NOT NULL,
    price NUMERIC(28,8),
    quantity NUMERIC(28,8) NOT NULL,
    remaining_qty NUMERIC(28,8) NOT NULL,
    batch_id BIGINT,
    sequence BIGINT NOT NULL DEFAULT 0,
    origin_node BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_orders_market_status ON orders(market, status);
CREATE INDEX idx_orders_user ON orders(user_id, market);

CREATE TABLE trades (
    id UUID PRIMARY KEY,
    batch_id BIGINT NOT NULL,
    market VARCHAR(20) NOT NULL,
    taker_order_id UUID NOT NULL REFERENCES orders(id),
    maker_order_id UUID NOT NULL REFERENCES orders(id),
    taker_user_id UUID NOT NULL,
    maker_user_id UUID NOT NULL,
    price NUMERIC(28,8) NOT NULL,
    quantity NUMERIC(28,8) NOT NULL,
    quote_amount NUMERIC(28,8) NOT NULL,
    taker_side VARCHAR(4) NOT NULL,
    matcher_node BYTEA NOT NULL,
    executed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_trades_market ON trades(market, executed_at DESC);
CREATE INDEX idx_trades_batch ON trades(batch_id);

CREATE TABLE balances (
    user_id UUID NOT NULL,
    asset VARCHAR(10) NOT NULL,
    available NUMERIC(28,8) NOT NULL DEFAULT 0,
    frozen NUMERIC(28,8) NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (user_id, asset)
);

CREATE TABLE epochs (
    epoch_id BIGINT PRIMARY KEY,
    phase VARCHAR(10) NOT NULL,
    batch_hash BYTEA,
    result_hash BYTEA,
    trade_count INT DEFAULT 0,
    started_at TIMESTAMPTZ NOT NULL,
    completed_at TIMESTAMPTZ
);
