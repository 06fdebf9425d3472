-- rnnsweep's own tables next to Optuna's, created if missing (schema version 1).
CREATE TABLE IF NOT EXISTS rnnsweep_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rnnsweep_epochs (
    trial_id INTEGER NOT NULL REFERENCES trials (trial_id),
    epoch INTEGER NOT NULL,
    metrics_json TEXT NOT NULL,
    PRIMARY KEY (trial_id, epoch)
);
INSERT INTO rnnsweep_meta (key, value) VALUES ('schema_version', '1') ON CONFLICT (key) DO NOTHING;
-- Indexes that keep a claim's cost flat as a study grows (Optuna's schema indexes trials by
-- study only, so counting finished trials or finding the queue scanned every trial).
CREATE INDEX IF NOT EXISTS ix_rnnsweep_trials_study_state_number ON trials (study_id, state, number);
CREATE INDEX IF NOT EXISTS ix_rnnsweep_trials_study_number ON trials (study_id, number);
