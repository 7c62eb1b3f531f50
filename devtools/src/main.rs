//! `credit-dev`: the development tools (registry stand-in, replay, summary, training). Not part
//! of the worker image's entry point; see `credit-worker` for the worker itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use credit_devtools::alerting::{self, AlertPath};
use credit_devtools::replay::{replay, ReplayOptions};
use credit_devtools::scrape::Exposition;
use credit_devtools::train::{train, TrainOptions};
use credit_devtools::{registry_standin, summary};
use credit_worker::app::shutdown_on_signal;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(version, about = "Development tools for the credit worker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the LightGBM model and write a versioned model directory.
    Train {
        #[arg(long, default_value = "data/german_credit.csv")]
        data: PathBuf,
        #[arg(long, default_value = "models")]
        models_dir: PathBuf,
        #[arg(long, default_value = "credit-v1")]
        version: String,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Share of rows held out for the reported AUC.
        #[arg(long, default_value_t = 0.2)]
        holdout_fraction: f64,
        /// Reason-code catalogue packaged with the model.
        #[arg(long, default_value = "config/reason_codes.toml")]
        reason_codes: PathBuf,
    },
    /// Produce LoanApplication events from the CSV.
    Replay(ReplayOptions),
    /// DEVELOPMENT STAND-IN for the Confluent Schema Registry REST subset (not for production).
    RegistryStandin {
        #[arg(long, default_value = "127.0.0.1:18081")]
        listen: SocketAddr,
        /// Persist registrations here so restarts keep schema ids.
        #[arg(long)]
        state_file: Option<PathBuf>,
    },
    /// Print the sum of a metric's samples (0 when absent) from a `/metrics` endpoint.
    Metric {
        #[arg(long, default_value = "http://127.0.0.1:9464/metrics")]
        url: String,
        /// Metric name, e.g. `credit_worker_dead_letters_total`.
        name: String,
        /// Only samples with this label value (`key=value`, repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Print the run summary from the audit table and the worker's metrics.
    Summary {
        #[arg(
            long,
            env = "CREDIT_WORKER__DATABASE__URL",
            default_value = "postgres://postgres@127.0.0.1:5432/credit_worker"
        )]
        database_url: String,
        #[arg(long, default_value = "http://127.0.0.1:9464/metrics")]
        metrics_url: String,
        #[arg(long, default_value = "http://127.0.0.1:9464/fairness")]
        fairness_url: String,
        /// Only audit rows whose application id starts with this.
        #[arg(long)]
        id_prefix: String,
        /// Events the replayer produced, for the report.
        #[arg(long)]
        replayed: Option<u64>,
    },
    /// Write the configuration of a local alert path: the shipped rules scaled to seconds, a
    /// Prometheus that scrapes one worker, the shipped Alertmanager routing to a local receiver.
    AlertConfigs {
        #[arg(long, default_value = "monitoring/rules")]
        rules_dir: PathBuf,
        #[arg(long, default_value = "monitoring/alertmanager.yml")]
        alertmanager_config: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The worker's HTTP address (`host:port`).
        #[arg(long, default_value = "127.0.0.1:9464")]
        worker: String,
        /// Alertmanager's listen address (`host:port`).
        #[arg(long)]
        alertmanager: String,
        /// The local webhook receiver (`http://host:port`).
        #[arg(long)]
        receiver_url: String,
    },
    /// Serve a webhook receiver that appends each notification to a file, one per line.
    AlertReceiver {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        log: PathBuf,
    },
    /// Wait until Alertmanager lists an active alert, then print it.
    WaitAlert {
        /// Alertmanager's base URL.
        #[arg(long)]
        alertmanager: String,
        #[arg(long)]
        alertname: String,
        /// Only alerts with this label value (`key=value`, repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        #[arg(long, default_value_t = 120)]
        timeout_seconds: u64,
    },
    /// Print the worker's alert events from the alerts topic (read committed).
    AlertEvents {
        #[arg(long, default_value = "127.0.0.1:19092")]
        bootstrap_servers: String,
        #[arg(long, default_value = "credit-alerts")]
        topic: String,
        /// Only events emitted at or after this time (ms since the epoch).
        #[arg(long, default_value_t = 0)]
        since_ms: i64,
        /// Wait (up to `timeout_seconds`) until at least this many were read.
        #[arg(long, default_value_t = 0)]
        at_least: usize,
        #[arg(long, default_value_t = 20)]
        timeout_seconds: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train { data, models_dir, version, seed, holdout_fraction, reason_codes } => {
            init_logging("info");
            let report = train(&TrainOptions { data, models_dir, version, seed, holdout_fraction, reason_codes })?;
            let metrics = &report.metrics;
            println!("model written to {}", report.directory.display());
            println!("  sha256          {}", report.model_sha256);
            println!(
                "  holdout AUC     {:.4} ({} rows; trained on {})",
                metrics.holdout_auc, metrics.holdout_rows, metrics.train_rows
            );
            let folds: Vec<f64> = metrics.cv5_auc_folds.iter().map(|auc| (auc * 1e4).round() / 1e4).collect();
            println!("  5-fold CV AUC   {:.4} (folds {folds:?})", metrics.cv5_auc_mean);
            Ok(())
        }
        Command::Replay(options) => {
            init_logging("warn");
            let report = replay(&options).await?;
            let seconds = report.elapsed.as_secs_f64();
            let total = report.valid + report.malformed;
            println!(
                "replayed {total} events ({} valid, {} malformed) to {} in {seconds:.2} s ({:.0} events/s)",
                report.valid,
                report.malformed,
                options.topic,
                total as f64 / seconds.max(1e-9)
            );
            Ok(())
        }
        Command::RegistryStandin { listen, state_file } => {
            init_logging("info");
            let shutdown = shutdown_on_signal();
            let bound = registry_standin::serve(listen, state_file, shutdown.clone()).await?;
            tracing::info!(address = %bound, "schema registry DEVELOPMENT STAND-IN listening (not for production)");
            shutdown.cancelled().await;
            Ok(())
        }
        Command::Metric { url, name, labels } => {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
            println!("{}", Exposition::fetch(&url).await?.sum(&name, &labels));
            Ok(())
        }
        Command::Summary { database_url, metrics_url, fairness_url, id_prefix, replayed } => {
            let pool = sqlx::PgPool::connect(&database_url).await.context("connecting to the audit database")?;
            let mut report = summary::from_audit(&pool, &id_prefix).await?;
            report.events_replayed = replayed;
            let metrics = Exposition::fetch(&metrics_url).await.context("scraping the worker's metrics")?;
            summary::add_metrics(&mut report, &metrics);
            let fairness = reqwest::get(&fairness_url).await.context("reading the worker's /fairness")?;
            report.fairness = Some(fairness.json().await.context("parsing /fairness")?);
            print!("{}", summary::render(&report));
            Ok(())
        }
        Command::AlertConfigs { rules_dir, alertmanager_config, out, worker, alertmanager, receiver_url } => {
            let path = AlertPath { worker: &worker, alertmanager: &alertmanager, receiver_url: &receiver_url };
            alerting::write_configs(&rules_dir, &alertmanager_config, &out, &path)
        }
        Command::AlertReceiver { listen, log } => alerting::serve_receiver(listen, log).await,
        Command::WaitAlert { alertmanager, alertname, labels, timeout_seconds } => {
            let timeout = Duration::from_secs(timeout_seconds);
            let alert = alerting::wait_for_alert(&alertmanager, &alertname, &labels, timeout).await?;
            print!("{}", alerting::render_listed(&alert));
            Ok(())
        }
        Command::AlertEvents { bootstrap_servers, topic, since_ms, at_least, timeout_seconds } => {
            let (quiet, timeout) = (Duration::from_secs(2), Duration::from_secs(timeout_seconds));
            let events = tokio::task::spawn_blocking(move || {
                alerting::alert_events(&bootstrap_servers, &topic, since_ms, at_least, quiet, timeout)
            })
            .await??;
            print!("{}", alerting::render_events(&events));
            Ok(())
        }
    }
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("`{text}` is not key=value"))?;
    Ok((key.to_owned(), value.to_owned()))
}

fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
