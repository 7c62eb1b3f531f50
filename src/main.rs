//! `credit-worker`: the worker, and the operations around it (topics, configuration check,
//! health probe, audit verification and retention). Development tools are in `credit-dev`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use credit_worker::app::{self, shutdown_on_signal};
use credit_worker::config::{LogFormat, WorkerConfig};
use credit_worker::ops::{model_risk, retention, verify};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use tracing_subscriber::EnvFilter;

/// The hot path allocates and frees per record on several threads; with glibc's malloc that was
/// a third of the worker's CPU (perf during `make bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Streaming credit-decision worker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume applications, decide, publish, audit (until SIGTERM/SIGINT).
    Worker {
        /// TOML config file; CREDIT_WORKER__SECTION__KEY environment variables override it.
        #[arg(long, env = "CREDIT_WORKER_CONFIG", default_value = "config/default.toml")]
        config: PathBuf,
    },
    /// Create topics through the Kafka admin API (existing topics are left as they are).
    CreateTopics {
        #[arg(long, default_value = "127.0.0.1:19092")]
        bootstrap_servers: String,
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Load and validate the configuration (file + environment), print it with secrets redacted.
    CheckConfig {
        #[arg(long, env = "CREDIT_WORKER_CONFIG", default_value = "config/default.toml")]
        config: PathBuf,
    },
    /// HTTP GET a URL; exit 0 on a 2xx answer (container health checks without curl in the image).
    Probe {
        #[arg(long, default_value = "http://127.0.0.1:9464/health")]
        url: String,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Audit table tools: verify (hash chains + re-scoring) and retention purge.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write the model-risk report of an event-time period: report.json and a self-contained
    /// report.html (fairness with intervals over time, drift, reason codes by group, performance
    /// on matured labels, alerts, model versions).
    Report {
        /// The worker's configuration (database, keys, grouping, thresholds, alerts topic).
        #[arg(long, env = "CREDIT_WORKER_CONFIG", default_value = "config/default.toml")]
        config: PathBuf,
        /// Start of the period (RFC 3339), inclusive.
        #[arg(long, required_unless_present = "last_days", conflicts_with = "last_days")]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// The period is the last this many days before --to (a scheduled run's week: 7).
        #[arg(long)]
        last_days: Option<u32>,
        /// End of the period (RFC 3339), exclusive; now if absent.
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// Directory the report is written to (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Write into a subdirectory of --out named by the period (scheduled runs keep every report).
        #[arg(long)]
        dated: bool,
        /// Directory holding the model versions (for drift against their training histograms);
        /// model.models_root, else the active model's parent directory, if absent.
        #[arg(long)]
        models_root: Option<PathBuf>,
        /// Leave out the alerts (no broker is read).
        #[arg(long)]
        skip_alerts: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every hash chain, then re-score a range of rows with their recorded model and compare
    /// probability (bit for bit), decision and reasons. Exits non-zero on any difference.
    Verify {
        #[arg(long, env = "CREDIT_WORKER__DATABASE__URL", default_value = DEFAULT_DATABASE_URL)]
        database_url: String,
        /// Directory holding the model versions named in the rows.
        #[arg(long, default_value = "models")]
        models_root: PathBuf,
        /// Re-score rows processed at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Re-score rows processed before this time (RFC 3339).
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Re-score rows whose application id starts with this.
        #[arg(long)]
        id_prefix: Option<String>,
        /// Re-score at most this many rows (oldest first).
        #[arg(long)]
        limit: Option<i64>,
        /// Skip the chain check (re-score only).
        #[arg(long)]
        skip_chains: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete audit rows (and outcomes) older than the retention period, keeping the chains verifiable.
    Purge {
        #[arg(long, env = "CREDIT_WORKER__DATABASE__URL", default_value = DEFAULT_DATABASE_URL)]
        database_url: String,
        /// Months to keep; at least 25 (Regulation B, 12 CFR 1002.12(b)).
        #[arg(long, env = "CREDIT_WORKER_AUDIT_RETENTION_MONTHS", default_value_t = retention::MINIMUM_RETENTION_MONTHS)]
        retention_months: u32,
        /// Reference time instead of now (RFC 3339), for back-dated runs and tests.
        #[arg(long)]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
    },
}

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/credit_worker";

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Worker { config } => {
            let environment: BTreeMap<String, String> = std::env::vars().collect();
            let config = WorkerConfig::load(&config, &environment).context("loading configuration")?;
            init_logging(config.log_format, &config.log_level);
            app::run(config, shutdown_on_signal()).await
        }
        Command::CreateTopics { bootstrap_servers, partitions, topics } => {
            create_topics(&bootstrap_servers, partitions, &topics).await
        }
        Command::CheckConfig { config } => {
            let environment: BTreeMap<String, String> = std::env::vars().collect();
            let config = WorkerConfig::load(&config, &environment).context("loading configuration")?;
            println!("{}", serde_json::to_string_pretty(&config.redacted())?);
            Ok(())
        }
        Command::Probe { url, timeout_ms } => {
            let client = reqwest::Client::builder().timeout(Duration::from_millis(timeout_ms)).build()?;
            let status = client.get(&url).send().await.with_context(|| format!("GET {url}"))?.status();
            anyhow::ensure!(status.is_success(), "GET {url}: {status}");
            Ok(())
        }
        Command::Report { config, from, last_days, to, out, dated, models_root, skip_alerts } => {
            let to = to.unwrap_or_else(chrono::Utc::now);
            let from = match (from, last_days) {
                (Some(from), _) => from,
                (None, days) => to - chrono::Duration::days(i64::from(days.unwrap_or(7))),
            };
            let out = if dated {
                out.join(format!("{}_{}", from.format("%Y%m%dT%H%MZ"), to.format("%Y%m%dT%H%MZ")))
            } else {
                out
            };
            report(&config, from, to, &out, models_root, skip_alerts).await
        }
        Command::Audit(command) => {
            init_logging(LogFormat::Text, "warn");
            audit_command(command).await
        }
    }
}

async fn audit_command(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify { database_url, models_root, since, until, id_prefix, limit, skip_chains, json } => {
            let pool = sqlx::PgPool::connect(&database_url).await.context("connecting to the audit database")?;
            let (models, refused) = verify::load_models(&models_root)
                .with_context(|| format!("reading the models under {}", models_root.display()))?;
            for reason in refused {
                eprintln!("warning: model refused: {reason}");
            }
            let mut report = verify::VerifyReport::default();
            if !skip_chains {
                verify::verify_chains(&pool, &mut report).await?;
            }
            let range = verify::RescoreRange { since, until, application_id_prefix: id_prefix, limit };
            verify::rescore(&pool, &models, &range, &mut report).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", verify::render(&report, !skip_chains));
            }
            anyhow::ensure!(report.passed(), "audit verification failed");
            Ok(())
        }
        AuditCommand::Purge { database_url, retention_months, as_of } => {
            let pool = sqlx::PgPool::connect(&database_url).await.context("connecting to the audit database")?;
            let as_of = as_of.unwrap_or_else(chrono::Utc::now);
            let report = retention::purge(&pool, retention_months, as_of).await?;
            println!(
                "audit purge: kept {retention_months} months (cutoff {}); {} partitions dropped {:?}; deleted {} audit \
                 rows, anchored {} chains; deleted {} outcomes",
                report.cutoff.map(|cutoff| cutoff.to_rfc3339()).unwrap_or_default(),
                report.partitions_dropped.len(),
                report.partitions_dropped,
                report.audit_rows_deleted,
                report.chains_pruned,
                report.outcome_rows_deleted
            );
            Ok(())
        }
    }
}

async fn report(
    config_path: &std::path::Path,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    out: &std::path::Path,
    models_root: Option<PathBuf>,
    skip_alerts: bool,
) -> Result<()> {
    let environment: BTreeMap<String, String> = std::env::vars().collect();
    let config = WorkerConfig::load(config_path, &environment)
        .with_context(|| format!("loading the configuration {}", config_path.display()))?;
    let keys = credit_worker::config::protected_keys(&config.database)?;
    let models_root = models_root
        .or_else(|| config.model.models_root.clone())
        .or_else(|| config.model.directory.parent().map(std::path::Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("models"));
    let (cards, refused) = model_risk::model_cards(&models_root)
        .with_context(|| format!("reading the models under {}", models_root.display()))?;
    for reason in refused {
        eprintln!("warning: model refused: {reason}");
    }
    let settings = model_risk::ReportSettings {
        grouping: config.grouping.clone(),
        min_group_size: config.fairness.min_group_size,
        bucket_seconds: config.fairness.bucket_seconds as i64,
        disparate_impact_threshold: config.fairness.disparate_impact_threshold,
        drift_min_count: config.drift.min_count,
        psi_threshold: config.drift.psi_threshold,
        max_event_time_past_seconds: config.pipeline.max_event_time_past_seconds as i64,
        max_event_time_future_seconds: config.pipeline.max_event_time_future_seconds as i64,
        keys: &keys,
        cards,
        kafka: (!skip_alerts).then_some(&config.kafka),
    };
    let pool = sqlx::PgPool::connect(&config.database.url).await.context("connecting to the audit database")?;
    let report = model_risk::build(&pool, &settings, from, to).await.context("building the report")?;
    let page = model_risk::write(&report, out)?;
    println!(
        "model-risk report {} to {}: {} decisions, {} models, {} alert events; wrote {} and {}",
        report.period.from.to_rfc3339(),
        report.period.to.to_rfc3339(),
        report.decisions.total,
        report.models.len(),
        report.alerts.len(),
        page.display(),
        out.join("report.json").display()
    );
    Ok(())
}

async fn create_topics(bootstrap_servers: &str, partitions: i32, topics: &[String]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .create()
        .context("creating the admin client")?;
    let new_topics: Vec<NewTopic<'_>> =
        topics.iter().map(|topic| NewTopic::new(topic, partitions, TopicReplication::Fixed(1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new_topics, &options).await.context("CreateTopics request")? {
        match result {
            Ok(topic) => println!("created topic {topic} ({partitions} partitions)"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => println!("topic {topic} exists"),
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
