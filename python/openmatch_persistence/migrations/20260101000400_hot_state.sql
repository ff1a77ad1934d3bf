-- Recovery from rows loads only the hot state (docs/state.md, "The hot
-- state"; docs/recovery.md): the open orders, the ids of the id window and
-- the recent epochs, each through an index, never the whole history.
--
-- The checkpoint keeps the state's logical clock and its highest closed
-- epoch at the checkpoint's position: the rows alone do not give them
-- exactly once history has left the state.
ALTER TABLE persistence_checkpoint ADD COLUMN clock_ns BIGINT;
ALTER TABLE persistence_checkpoint ADD COLUMN closed_epochs_through BIGINT;

-- The open orders.
CREATE INDEX idx_orders_open ON orders (id)
    WHERE status IN ('PENDING_ESCROW', 'ACTIVE', 'PARTIALLY_FILLED');
-- Ids that are not UUIDv7 carry no time and stay in the window for good
-- (the engine never writes them: these indexes stay empty).
CREATE INDEX idx_orders_untimed ON orders (id) WHERE substr(id::text, 15, 1) <> '7';
CREATE INDEX idx_trades_untimed ON trades (id) WHERE substr(id::text, 15, 1) <> '7';
-- The epochs not finalized.
CREATE INDEX idx_epochs_open ON epochs (epoch_id) WHERE phase <> 'FINALIZE';
