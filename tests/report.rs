//! The model-risk report (`credit-worker report`) on the local stack: its figures against the
//! worker's own `/fairness`, and its page in headless Chromium (Debian's, installed by
//! `scripts/bootstrap.sh`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use credit_devtools::replay::{replay, Injection, ProtectedMode, ReplayOptions};
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium, headless, with no network (any external asset would fail to load and say so on
/// the console) and a fresh profile; `args` say what to do with `page`. Returns stdout, stderr.
fn chromium(page: &Path, profile: &Path, args: &[&str]) -> (String, String) {
    assert!(Path::new(CHROMIUM).is_file(), "{CHROMIUM} is missing: scripts/bootstrap.sh installs Debian's chromium");
    let output = Command::new(CHROMIUM)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg("--host-resolver-rules=MAP * ~NOTFOUND")
        .args(["--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("running chromium");
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Every `data-json="pointer">text` of the rendered page.
fn figures_on_page(dom: &str) -> Vec<(String, String)> {
    dom.split("data-json=\"")
        .skip(1)
        .map(|rest| {
            let (pointer, after) = rest.split_once('"').unwrap();
            let text = after.split_once('>').unwrap().1.split('<').next().unwrap();
            (pointer.to_owned(), text.trim().to_owned())
        })
        .collect()
}

/// Waits until the series of `name` with `labels` (all series summed when none) reach `at_least`.
async fn wait_metric(worker: &WorkerProcess, name: &str, labels: &[(&str, &str)], at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let value = || async {
        match labels {
            [] => worker.metric(name).await,
            _ => worker.metrics().await.value(name, labels).unwrap_or(0.0),
        }
    };
    while value().await < at_least {
        assert!(Instant::now() < deadline, "{name}{labels:?} < {at_least}; log: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A biased replay and its outcomes, then the report of the worker's fairness window: its
/// period figures equal `/fairness` for that window, intersectional groups included; it names
/// the model that decided, the disparate-impact alert that fired, the label coverage. Its page, in headless Chromium with
/// the network cut, logs nothing to the console, renders a screenshot, and every figure it
/// shows equals `report.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_equals_fairness_and_renders_in_chromium() {
    let deployment = Deployment::create("report", 2).await;
    let settings =
        [("CREDIT_WORKER__ALERTS__SUSTAIN_SECONDS", "1"), ("CREDIT_WORKER__ALERTS__EVALUATION_INTERVAL_MS", "200")];
    let mut worker = WorkerProcess::start(&deployment, &settings);
    worker.wait_ready(Duration::from_secs(60)).await;
    // Unbiased applications 30 minutes ago, biased ones now: the report's charts show the drop.
    let earlier = chrono::Utc::now().timestamp_millis() - 30 * 60_000;
    let fair = ReplayOptions {
        protected: ProtectedMode::Independent,
        event_time_ms: Some(earlier),
        ..deployment.replay_options("fair")
    };
    replay(&fair).await.unwrap();
    let biased =
        ReplayOptions { event_time_ms: None, inject: vec![Injection::Bias], id_prefix: "biased".into(), ..fair };
    replay(&biased).await.unwrap();
    wait_metric(&worker, "credit_worker_decisions_total", &[], 2000.0).await;
    let outcomes =
        ReplayOptions { outcomes_topic: Some(deployment.outcomes_topic.clone()), outcomes_only: true, ..biased };
    replay(&outcomes).await.unwrap();
    wait_metric(&worker, "credit_worker_outcomes_total", &[("result", "matched")], 1000.0).await;
    let firing = [("kind", "fairness"), ("metric", "disparate_impact"), ("subject", "age_band/<=25")];
    wait_metric(&worker, "credit_worker_alert_firing", &firing, 1.0).await;

    let fairness: Value = reqwest::get(worker.url("/fairness")).await.unwrap().json().await.unwrap();
    let watermark = fairness["fairness"]["watermark_millis"].as_i64().unwrap();
    let window_ms = fairness["fairness"]["window_seconds"].as_i64().unwrap() * 1000;
    let bucket_ms = 60_000;
    let to = (watermark.div_euclid(bucket_ms) + 1) * bucket_ms;
    let time = |millis: i64| chrono::DateTime::from_timestamp_millis(millis).unwrap().to_rfc3339();
    let out = repo_root().join("target/test-logs").join(unique("report"));
    let mut command = Command::new(worker_binary());
    command
        .current_dir(repo_root())
        .args(["report", "--config", "config/default.toml", "--from", &time(to - window_ms), "--to", &time(to)])
        .arg("--out")
        .arg(&out)
        .envs(deployment.worker_env(0));
    let started = Instant::now();
    let output = command.output().expect("running credit-worker report");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "report failed: {printed}");
    println!("{printed}(in {:.2} s)", started.elapsed().as_secs_f64());

    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["fairness"], fairness["fairness"]["window"], "report.json and /fairness, same window");
    assert_eq!(report["decisions"]["total"], 2000);
    assert!(report["fairness_over_time"].as_array().unwrap().len() >= 2, "points over time");
    assert_eq!(report["models"][0]["version"], "credit-v1");
    assert_eq!(report["models"][0]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(report["outcomes"]["labelled"], 1000, "the biased applications' outcomes");
    assert_eq!(report["outcomes"]["label_coverage"], 0.5);
    assert!(report["outcomes"]["figures"]["auc"].as_f64().unwrap() > 0.6);
    let alerts = report["alerts"].as_array().unwrap();
    assert!(
        alerts
            .iter()
            .any(|alert| alert["alert_key"] == "fairness/disparate_impact/age_band/<=25" && alert["state"] == "FIRING"),
        "the DI alert is in the report: {alerts:?}"
    );
    assert!(report["drift"][0]["series"].as_array().unwrap().len() > 10);
    assert!(report["reasons"].as_array().unwrap().iter().any(|group| group["codes"].as_array().unwrap().len() > 1));
    let age =
        report["fairness"].as_array().unwrap().iter().find(|attribute| attribute["attribute"] == "age_band").unwrap();
    let young = age["groups"].as_array().unwrap().iter().find(|group| group["group"] == "<=25").unwrap();
    assert!(young["disparate_impact"]["upper"].as_f64().unwrap() < 0.8, "the injected bias shows: {young}");
    let pair = report["fairness"].as_array().unwrap().iter().find(|attribute| attribute["attribute"] == "sex:age_band");
    let pair = pair.expect("the sex:age_band intersection is in the report");
    assert_eq!(pair["reference_group"], "male:>25");
    let young_women = pair["groups"].as_array().unwrap().iter().find(|group| group["group"] == "female:<=25").unwrap();
    assert!(young_women["disparate_impact"]["value"].as_f64().unwrap() < 0.8, "{young_women}");

    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    for external in ["<script", " src=", "<link", "url("] {
        assert!(!html.contains(external), "the page is self-contained, yet holds {external:?}");
    }
    let profile = out.join("chromium-profile");
    let (dom, log) = chromium(&page, &profile, &["--dump-dom"]);
    let console: Vec<&str> = log.lines().filter(|line| line.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    let shown = figures_on_page(&dom);
    assert!(shown.len() > 100, "figures on the page: {}", shown.len());
    for (pointer, text) in &shown {
        let expected = report.pointer(pointer).unwrap_or_else(|| panic!("{pointer} is not in report.json"));
        let value: f64 = text.parse().unwrap_or_else(|_| panic!("{pointer} shows {text:?}"));
        let expected = expected.as_f64().unwrap();
        assert!(
            (value - expected).abs() <= 5e-5 * expected.abs().max(1.0),
            "{pointer}: page {value}, report.json {expected}"
        );
    }
    let screenshot = out.join("report.png");
    chromium(&page, &profile, &[&format!("--screenshot={}", screenshot.display()), "--window-size=1280,2400"]);
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 50_000, "screenshot of {} bytes", png.len());
    assert!(html.matches("<polyline").count() >= 6, "approval-rate and disparate-impact lines are drawn");
    println!("{} figures on the page equal report.json; screenshot {}", shown.len(), screenshot.display());
    assert!(worker.terminate(Duration::from_secs(30)));
}
