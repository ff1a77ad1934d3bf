-- Which data directory this database holds the state of (docs/storage.md,
-- "Identity"). One row, written when a data directory first opens the
-- database (or adopts it); every flush and state image checks it in its own
-- transaction, so a second data directory can never overwrite the first's
-- checkpoint. The checkpoint and the image also record the id they were
-- written for.
CREATE TABLE persistence_identity (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    data_dir_id UUID NOT NULL,
    data_dir_path TEXT NOT NULL,
    -- 'new' (the database held no snapshot), 'adopted' (asked for), or
    -- 'upgraded' (a data directory from before identities, continuing it).
    claimed_as TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

ALTER TABLE persistence_checkpoint ADD COLUMN data_dir_id UUID;
ALTER TABLE persistence_state_image ADD COLUMN data_dir_id UUID;
