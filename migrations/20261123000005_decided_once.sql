-- Decided once: one lean, append-only audit row per application; the decision policy, the source
-- partition's chain head and its audited-through offset, and the monitors' per-bucket counts,
-- all written in the audit row's transaction.
--
-- The rows written before this migration stay where they are, renamed *_legacy, and keep
-- verifying with the hash they were written with; the view `decision_audit` shows both.

ALTER TABLE decision_audit RENAME TO decision_audit_legacy;
ALTER TABLE audit_chain_heads RENAME TO audit_chain_heads_legacy;

-- What a decision was made under: model, cutoffs and reason catalogue. Rows carry its 2-byte id.
CREATE TABLE decision_policies (
    policy_id                smallint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_version            text NOT NULL,
    model_sha256             text NOT NULL,
    approve_below            double precision NOT NULL,
    decline_at_or_above      double precision NOT NULL,
    reason_catalogue_version text NOT NULL,
    -- Model inputs in card order: decisions.inputs[i] is feature_names[i].
    feature_names            text[] NOT NULL,
    -- The catalogue's entries: decisions.reasons[k] = i means reason_codes[i] / reason_features[i] / reason_texts[i].
    reason_codes             text[] NOT NULL,
    reason_features          text[] NOT NULL,
    reason_texts             text[] NOT NULL,
    registered_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model_sha256, approve_below, decline_at_or_above, reason_catalogue_version)
);

-- One row per source partition: its hash chain's head, the offset below which every record has
-- its outcome (audited or dead-lettered), the offset below which every outcome was announced
-- (recorded with the next batch after the Kafka transaction committed), and the latest event
-- time counted by the monitors.
CREATE TABLE source_partitions (
    source_id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic              text NOT NULL,
    partition          integer NOT NULL,
    audited_through    bigint NOT NULL DEFAULT 0,
    announced_through  bigint NOT NULL DEFAULT 0,
    chain_last_seq     bigint NOT NULL DEFAULT 0,
    chain_last_hash    bytea NOT NULL,
    -- Where retention cut the chain: verification starts after this row, from its hash.
    anchor_seq         bigint NOT NULL DEFAULT 0,
    anchor_hash        bytea,
    event_watermark_ms bigint,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, partition)
);

-- The audit rows, partitioned by month of processed_at so that retention drops partitions.
-- Written with COPY BINARY; never updated.
CREATE TABLE decisions (
    source_id              integer NOT NULL,
    chain_seq              bigint NOT NULL,            -- 1, 2, 3 ... within the source partition's chain
    source_offset          bigint NOT NULL,
    application_id         text NOT NULL,
    policy_id              smallint NOT NULL,
    outcome                smallint NOT NULL CHECK (outcome BETWEEN 0 AND 2),  -- approve, review, decline
    probability_of_default double precision NOT NULL,
    inputs                 double precision[] NOT NULL, -- model inputs exactly as scored, card order
    reasons                smallint[] NOT NULL,         -- catalogue entries, principal reason first
    contributions          double precision[] NOT NULL, -- their TreeSHAP contributions (log-odds)
    sex_status             text,                        -- protected: monitoring only, never model inputs
    age_in_years           smallint,
    foreign_worker         text,
    schema_id              integer NOT NULL,
    event_time             timestamptz NOT NULL,
    consumed_at            timestamptz NOT NULL,
    processed_at           timestamptz NOT NULL,
    row_hash               bytea NOT NULL               -- sha256 of the row's binary encoding and the previous row's hash
) PARTITION BY RANGE (processed_at);

-- Justified indexes:
-- BRIN on processed_at: time-range reads (reports, verification by period) at ~no write cost.
CREATE INDEX decisions_processed_at ON decisions USING brin (processed_at);
-- (source_id, chain_seq): chain verification walks each chain in order, and a stored decision is
-- fetched by its position. Keys grow with the sequence, so inserts go to the right edge.
CREATE INDEX decisions_chain ON decisions (source_id, chain_seq);

-- The key an application is decided once under (the worker computes the same in Rust).
CREATE FUNCTION application_key(application_id text) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT substring(sha256(convert_to(application_id, 'UTF8')) FROM 1 FOR 16) $$;

-- One row per decided application, across partitions of `decisions`: the rule "an application
-- is decided once" is this primary key. application_key = first 16 bytes of sha256(application_id).
-- source_id NULL: decided before this migration (the row is in decision_audit_legacy).
CREATE TABLE decided_applications (
    application_key bytea PRIMARY KEY,
    source_id       integer,
    chain_seq       bigint,
    processed_at    timestamptz NOT NULL
);

-- BRIN on processed_at: retention deletes claims whose decisions' partition it dropped.
CREATE INDEX decided_applications_processed_at ON decided_applications USING brin (processed_at);

INSERT INTO decided_applications (application_key, processed_at)
SELECT application_key(application_id), min(processed_at)
FROM decision_audit_legacy GROUP BY application_id;

-- Elementwise sum of two count arrays (the monitors' upserts).
CREATE FUNCTION add_counts(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i) FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i) $$;

-- Fairness counts per source partition, event-time bucket, attribute and group:
-- counts = {approve, review, decline}. The monitors rebuild their windows from these.
CREATE TABLE monitor_fairness (
    source_id  integer NOT NULL,
    bucket_ms  bigint NOT NULL,
    attribute  smallint NOT NULL,
    grp        text NOT NULL,
    counts     bigint[] NOT NULL,
    PRIMARY KEY (source_id, bucket_ms, attribute, grp)
);

-- All-time fairness counts per source partition, attribute and group.
CREATE TABLE monitor_fairness_totals (
    source_id  integer NOT NULL,
    attribute  smallint NOT NULL,
    grp        text NOT NULL,
    counts     bigint[] NOT NULL,
    PRIMARY KEY (source_id, attribute, grp)
);

-- Drift histograms per source partition, event-time bucket and series (feature i, or the score
-- after the last feature): counts per bin of the training histogram.
CREATE TABLE monitor_drift (
    source_id  integer NOT NULL,
    bucket_ms  bigint NOT NULL,
    series     smallint NOT NULL,
    counts     bigint[] NOT NULL,
    PRIMARY KEY (source_id, bucket_ms, series)
);

-- The decision of each application as the monitors and the outcome join read it: new rows through
-- their claim, older ones from the legacy table. Look up by application_key for an index.
CREATE VIEW application_decisions AS
SELECT a.application_key, d.application_id, p.model_sha256, d.outcome, d.probability_of_default,
       d.sex_status, d.age_in_years, d.foreign_worker, d.processed_at
FROM decided_applications a
JOIN decisions d ON d.source_id = a.source_id AND d.chain_seq = a.chain_seq AND d.processed_at = a.processed_at
JOIN decision_policies p ON p.policy_id = d.policy_id
UNION ALL
SELECT application_key(l.application_id), l.application_id, l.model_sha256,
       CASE l.decision WHEN 'approve' THEN 0 WHEN 'review' THEN 1 ELSE 2 END::smallint, l.probability_of_default,
       l.protected_attributes->>'personal_status_and_sex', (l.protected_attributes->>'age_in_years')::smallint,
       l.protected_attributes->>'foreign_worker', l.processed_at
FROM decision_audit_legacy l;

-- For auditors: every decision, readable: feature names with their inputs, reason codes with
-- their texts, the decision as a word. New rows and the rows written before the lean table.
CREATE VIEW decision_audit AS
SELECT d.application_id, p.model_version, p.model_sha256,
       (ARRAY['approve', 'review', 'decline'])[d.outcome + 1] AS decision,
       d.probability_of_default, p.approve_below, p.decline_at_or_above,
       (SELECT jsonb_object_agg(p.feature_names[i], d.inputs[i]) FROM generate_subscripts(d.inputs, 1) AS i) AS model_inputs,
       coalesce((SELECT jsonb_agg(jsonb_build_object('code', p.reason_codes[r.entry], 'feature', p.reason_features[r.entry],
                                                     'text', p.reason_texts[r.entry], 'contribution', d.contributions[r.ord])
                                  ORDER BY r.ord)
                 FROM unnest(d.reasons) WITH ORDINALITY AS r(entry, ord)), '[]'::jsonb) AS reasons,
       p.reason_catalogue_version,
       jsonb_build_object('personal_status_and_sex', d.sex_status, 'age_in_years', d.age_in_years,
                          'foreign_worker', d.foreign_worker) AS protected_attributes,
       d.schema_id, s.topic AS source_topic, s.partition AS source_partition, d.source_offset,
       d.event_time, d.consumed_at, d.processed_at, false AS legacy
FROM decisions d
JOIN decision_policies p ON p.policy_id = d.policy_id
JOIN source_partitions s ON s.source_id = d.source_id
UNION ALL
SELECT application_id, model_version, model_sha256, decision, probability_of_default, approve_below, decline_at_or_above,
       model_inputs, reasons, reason_catalogue_version, protected_attributes, schema_id, source_topic, source_partition,
       source_offset, event_time, consumed_at, processed_at, true
FROM decision_audit_legacy;
