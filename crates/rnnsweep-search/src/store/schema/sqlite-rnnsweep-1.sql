-- rnnsweep's own tables, migration 1 (recorded in rnnsweep_meta).
CREATE TABLE rnnsweep_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE rnnsweep_epochs (
    trial_id INTEGER NOT NULL REFERENCES trials (trial_id),
    epoch INTEGER NOT NULL,
    metrics_json TEXT NOT NULL,
    PRIMARY KEY (trial_id, epoch)
);
