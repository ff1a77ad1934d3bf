-- The whole in-memory state as one checksummed image at a known AOF
-- position, beside the rows: recovery rebuilds a large state from it far
-- faster than from rows. One row; each snapshot replaces it.
CREATE TABLE persistence_state_image (
    id SMALLINT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    aof_position BIGINT NOT NULL,
    epoch_id BIGINT,
    data BYTEA NOT NULL,
    written_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
