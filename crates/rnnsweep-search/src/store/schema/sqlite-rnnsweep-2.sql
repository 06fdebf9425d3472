-- Indexes that keep a claim's cost flat as a study grows (Optuna's schema indexes trials by
-- study only, so counting finished trials or finding the queue scanned every trial).
CREATE INDEX IF NOT EXISTS ix_rnnsweep_trials_study_state_number ON trials (study_id, state, number);
CREATE INDEX IF NOT EXISTS ix_rnnsweep_trials_study_number ON trials (study_id, number);
