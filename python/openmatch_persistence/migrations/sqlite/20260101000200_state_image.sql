-- The whole in-memory state as one checksummed image at a known AOF
-- position, beside the rows (see the PostgreSQL migration of this version).
CREATE TABLE persistence_state_image (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    aof_position INTEGER NOT NULL,
    epoch_id INTEGER,
    data BLOB NOT NULL,
    written_at TEXT NOT NULL
);
