-- Adverse-action reasons and a tamper-evident hash chain per source partition.
ALTER TABLE decision_audit
    ADD COLUMN IF NOT EXISTS reasons                  jsonb NOT NULL DEFAULT '[]',  -- [{code, feature, text, contribution}]
    ADD COLUMN IF NOT EXISTS reason_catalogue_version text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS chain_key                text,      -- "<source_topic>/<source_partition>"
    ADD COLUMN IF NOT EXISTS chain_seq                bigint,    -- 1, 2, 3 ... within the chain
    ADD COLUMN IF NOT EXISTS prev_hash                bytea,     -- row_hash of chain_seq - 1 (zeros for the first)
    ADD COLUMN IF NOT EXISTS row_hash                 bytea;     -- sha256(canonical row, chain_key, chain_seq, prev_hash)

CREATE UNIQUE INDEX IF NOT EXISTS decision_audit_chain ON decision_audit (chain_key, chain_seq);

-- The head of each chain (its last row), and where retention pruning cut it.
CREATE TABLE IF NOT EXISTS audit_chain_heads (
    chain_key            text PRIMARY KEY,
    last_seq             bigint NOT NULL,
    last_hash            bytea NOT NULL,
    pruned_through_seq   bigint NOT NULL DEFAULT 0,
    pruned_through_hash  bytea,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
