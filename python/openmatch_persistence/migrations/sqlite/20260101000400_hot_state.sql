-- Recovery from rows loads only the hot state (see the PostgreSQL
-- migration of this version). Ids are stored as their lowercase text.
ALTER TABLE persistence_checkpoint ADD COLUMN clock_ns INTEGER;
ALTER TABLE persistence_checkpoint ADD COLUMN closed_epochs_through INTEGER;

CREATE INDEX idx_orders_open ON orders (id)
    WHERE status IN ('PENDING_ESCROW', 'ACTIVE', 'PARTIALLY_FILLED');
CREATE INDEX idx_orders_untimed ON orders (id) WHERE substr(id, 15, 1) <> '7';
CREATE INDEX idx_trades_untimed ON trades (id) WHERE substr(id, 15, 1) <> '7';
CREATE INDEX idx_epochs_open ON epochs (epoch_id) WHERE phase <> 'FINALIZE';
