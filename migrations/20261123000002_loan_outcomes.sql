-- Observed outcomes (delayed labels), joined to decision_audit on application_id.
CREATE TABLE IF NOT EXISTS loan_outcomes (
    application_id   text PRIMARY KEY,
    defaulted        boolean NOT NULL,
    observed_at      timestamptz NOT NULL,
    source_topic     text NOT NULL,
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL,
    written_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS loan_outcomes_observed_at ON loan_outcomes (observed_at);
CREATE INDEX IF NOT EXISTS decision_audit_application_id ON decision_audit (application_id);
