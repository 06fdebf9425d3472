-- rnnsweep's own tables next to Optuna's, created if missing (schema version 1).
CREATE TABLE IF NOT EXISTS rnnsweep_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rnnsweep_epochs (
    trial_id INTEGER NOT NULL REFERENCES trials (trial_id),
    epoch INTEGER NOT NULL,
    metrics_json TEXT NOT NULL,
    PRIMARY KEY (trial_id, epoch)
);
INSERT INTO rnnsweep_meta (key, value) VALUES ('schema_version', '1') ON CONFLICT (key) DO NOTHING;
