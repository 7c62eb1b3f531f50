-- One row per (application, model): what was decided, by which model, from which inputs.
CREATE TABLE IF NOT EXISTS decision_audit (
    decision_id            uuid PRIMARY KEY,              -- UUIDv5(application_id, model_sha256)
    application_id         text NOT NULL,
    model_version          text NOT NULL,
    model_sha256           text NOT NULL,
    decision               text NOT NULL CHECK (decision IN ('approve', 'decline', 'review')),
    probability_of_default double precision NOT NULL,
    approve_below          double precision NOT NULL,
    decline_at_or_above    double precision NOT NULL,
    model_inputs           jsonb NOT NULL,                -- feature name -> value exactly as scored
    protected_attributes   jsonb NOT NULL,                -- monitoring only, never model inputs
    schema_id              integer NOT NULL,
    source_topic           text NOT NULL,
    source_partition       integer NOT NULL,
    source_offset          bigint NOT NULL,
    event_time             timestamptz NOT NULL,
    consumed_at            timestamptz NOT NULL,
    processed_at           timestamptz NOT NULL,
    written_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT decision_audit_application_model UNIQUE (application_id, model_sha256)
);

CREATE INDEX IF NOT EXISTS decision_audit_processed_at ON decision_audit (processed_at);
