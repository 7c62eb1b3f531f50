-- Drift counts per model. Each model's decisions are binned with its own training histograms
-- and compared with them: after a hot swap the monitors report the new model against its own
-- baseline, over the window of its own decisions, and a rollback finds the earlier model's
-- window again. Counts written before this migration carry no model (''); no model's window
-- reads them, so drift is reported again once `drift.min_count` new decisions are counted.
ALTER TABLE monitor_drift ADD COLUMN model_sha256 text NOT NULL DEFAULT '';
ALTER TABLE monitor_drift ALTER COLUMN model_sha256 DROP DEFAULT;
ALTER TABLE monitor_drift DROP CONSTRAINT monitor_drift_pkey;
-- The rebuild reads a source partition's buckets from a time on: (source_id, bucket_ms) lead.
ALTER TABLE monitor_drift ADD PRIMARY KEY (source_id, bucket_ms, series, model_sha256);
