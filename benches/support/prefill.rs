//! The `prefilled` scenario's table: generated audit rows, as a long-running deployment has.

use std::time::Instant;

/// Fills the audit table with `rows` generated rows (one claim each, on a source partition of
/// their own, in this month's partition), in SQL, then analyses: the table a long-running
/// deployment ingests into.
pub async fn prefill(url: &str, rows: u64) {
    let started = Instant::now();
    let pool = sqlx::PgPool::connect(url).await.expect("the bench database");
    sqlx::migrate!("./migrations").run(&pool).await.expect("migrations");
    let month = chrono::Utc::now().format("%Y-%m-01").to_string();
    let partition = format!("decisions_y{}m{}", &month[..4], &month[5..7]);
    let statements = [
        format!(
            "CREATE TABLE IF NOT EXISTS {partition} PARTITION OF decisions FOR VALUES FROM ('{month}') \
             TO (('{month}'::date + interval '1 month')::date)"
        ),
        "INSERT INTO decision_policies (model_version, model_sha256, approve_below, decline_at_or_above, \
           reason_catalogue_version, feature_names, reason_codes, reason_features, reason_texts) \
         VALUES ('prefill', 'prefill', 0.3, 0.55, 'prefill', '{}', '{R01}', '{f}', '{t}') ON CONFLICT DO NOTHING"
            .to_owned(),
        "INSERT INTO source_partitions (topic, partition, chain_last_hash) VALUES ('prefill', 0, '\\x00') \
         ON CONFLICT DO NOTHING"
            .to_owned(),
        format!(
            "INSERT INTO decisions (source_id, chain_seq, source_offset, application_id, policy_id, outcome, \
               probability_of_default, inputs, reasons, contributions, protected_sealed, \
               schema_id, event_time, consumed_at, processed_at, row_hash) \
             SELECT s.source_id, g, g, 'prefill-' || g, p.policy_id, (g % 3)::int2, (g % 1000) / 1000.0, \
               ARRAY[g % 4, 24, g % 5, g % 10, 1000 + g % 9000, g % 5, g % 5, 2, 0, 3, 1, 0, 1, 1, 2, 1, 0]::float8[], \
               '{{1}}', '{{0.25}}', sha256(int8send(g)) || sha256(int8send(-g)), 1, \
               date_trunc('month', now()) + (g % 86400) * interval '1 second', date_trunc('month', now()), \
               date_trunc('month', now()) + (g % 86400) * interval '1 second', sha256(int8send(g)) \
             FROM generate_series(1, {rows}) AS g, source_partitions s, decision_policies p \
             WHERE s.topic = 'prefill' AND p.model_version = 'prefill'"
        ),
        format!(
            "INSERT INTO decided_applications (application_key, source_id, chain_seq, processed_at) \
             SELECT application_key('prefill-' || g), s.source_id, g, date_trunc('month', now()) + (g % 86400) * interval '1 second' \
             FROM generate_series(1, {rows}) AS g, source_partitions s WHERE s.topic = 'prefill' \
             ORDER BY 1"
        ),
        "ANALYZE".to_owned(),
    ];
    for statement in statements {
        sqlx::query(&statement).execute(&pool).await.expect("prefilling the audit table");
    }
    pool.close().await;
    eprintln!("   prefilled {rows} audit rows in {:.0} s", started.elapsed().as_secs_f64());
}
