-- decision_audit_application_id duplicates the leading column of the unique index
-- decision_audit_application_model (application_id, model_sha256), which serves the same lookups
-- (the outcomes join, verification by id). One index less to maintain on every audit insert.
DROP INDEX IF EXISTS decision_audit_application_id;
