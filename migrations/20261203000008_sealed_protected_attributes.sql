-- Protected attributes sealed at rest (field-level encryption in the worker; see README,
-- Security). New rows leave sex_status, age_in_years and foreign_worker NULL and hold the three
-- in protected_sealed: XChaCha20-Poly1305 under a key the database never sees, bound to the row's
-- application id. Rows written before this migration keep their plaintext columns until their
-- partition is dropped by retention (their row hashes cover the plaintext).
ALTER TABLE decisions ADD COLUMN protected_sealed bytea;

-- The views gain the sealed value as their last column (only the worker, holding the key, can
-- open it); protected_attributes in decision_audit is NULL for sealed rows.
CREATE OR REPLACE VIEW application_decisions AS
SELECT a.application_key, d.application_id, p.model_sha256, d.outcome, d.probability_of_default,
       d.sex_status, d.age_in_years, d.foreign_worker, d.processed_at, d.protected_sealed
FROM decided_applications a
JOIN decisions d ON d.source_id = a.source_id AND d.chain_seq = a.chain_seq AND d.processed_at = a.processed_at
JOIN decision_policies p ON p.policy_id = d.policy_id
UNION ALL
SELECT application_key(l.application_id), l.application_id, l.model_sha256,
       CASE l.decision WHEN 'approve' THEN 0 WHEN 'review' THEN 1 ELSE 2 END::smallint, l.probability_of_default,
       l.protected_attributes->>'personal_status_and_sex', (l.protected_attributes->>'age_in_years')::smallint,
       l.protected_attributes->>'foreign_worker', l.processed_at, NULL::bytea
FROM decision_audit_legacy l;

CREATE OR REPLACE VIEW decision_audit AS
SELECT d.application_id, p.model_version, p.model_sha256,
       (ARRAY['approve', 'review', 'decline'])[d.outcome + 1] AS decision,
       d.probability_of_default, p.approve_below, p.decline_at_or_above,
       (SELECT jsonb_object_agg(p.feature_names[i], d.inputs[i]) FROM generate_subscripts(d.inputs, 1) AS i) AS model_inputs,
       coalesce((SELECT jsonb_agg(jsonb_build_object('code', p.reason_codes[r.entry], 'feature', p.reason_features[r.entry],
                                                     'text', p.reason_texts[r.entry], 'contribution', d.contributions[r.ord])
                                  ORDER BY r.ord)
                 FROM unnest(d.reasons) WITH ORDINALITY AS r(entry, ord)), '[]'::jsonb) AS reasons,
       p.reason_catalogue_version,
       CASE WHEN d.protected_sealed IS NULL THEN
           jsonb_build_object('personal_status_and_sex', d.sex_status, 'age_in_years', d.age_in_years,
                              'foreign_worker', d.foreign_worker) END AS protected_attributes,
       d.schema_id, s.topic AS source_topic, s.partition AS source_partition, d.source_offset,
       d.event_time, d.consumed_at, d.processed_at, false AS legacy, d.protected_sealed
FROM decisions d
JOIN decision_policies p ON p.policy_id = d.policy_id
JOIN source_partitions s ON s.source_id = d.source_id
UNION ALL
SELECT application_id, model_version, model_sha256, decision, probability_of_default, approve_below, decline_at_or_above,
       model_inputs, reasons, reason_catalogue_version, protected_attributes, schema_id, source_topic, source_partition,
       source_offset, event_time, consumed_at, processed_at, true, NULL::bytea
FROM decision_audit_legacy;
