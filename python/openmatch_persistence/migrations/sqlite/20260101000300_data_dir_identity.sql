-- Which data directory this database holds the state of (see the
-- PostgreSQL migration of this version).
CREATE TABLE persistence_identity (
    singleton INTEGER PRIMARY KEY DEFAULT 1 CHECK (singleton = 1),
    data_dir_id TEXT NOT NULL,
    data_dir_path TEXT NOT NULL,
    claimed_as TEXT NOT NULL,
    claimed_at TEXT NOT NULL
);

ALTER TABLE persistence_checkpoint ADD COLUMN data_dir_id TEXT;
ALTER TABLE persistence_state_image ADD COLUMN data_dir_id TEXT;
