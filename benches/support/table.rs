//! The bench's table on stdout.

use crate::Report;

/// The report as a table, then the pairs with the peer and their ratios.
pub fn print(report: &Report) {
    println!();
    println!(
        "pipeline benchmark @ {} ({} events, {} partitions, {} cores)",
        report.git_commit, report.events, report.partitions, report.cores
    );
    println!(
        "{:<10} {:>11} {:>10} {:>9} {:>10} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "scenario",
        "prefilled",
        "events/s",
        "cold s",
        "µs CPU/ev",
        "RSS MiB",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "lat µs/ev",
        "batch",
        "PG µs/row"
    );
    for scenario in &report.scenarios {
        println!(
            "{:<10} {:>11} {:>10.0} {:>9.2} {:>10.2} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>9.0} {:>9.1}",
            scenario.name,
            scenario.prefilled_rows,
            scenario.events_per_second,
            scenario.cold_start_seconds,
            scenario.cpu_microseconds_per_decision,
            scenario.peak_rss_mib,
            scenario.latency.p50_ms,
            scenario.latency.p95_ms,
            scenario.latency.p99_ms,
            scenario.latency.cpu_microseconds_per_decision,
            scenario.mean_batch_rows,
            scenario.database_cpu_microseconds_per_row,
        );
        for (point, latency) in
            [("audit commit", &scenario.latency.durable), ("audited and announced", &scenario.latency.announced)]
        {
            println!(
                "{:<10} event -> {point} at {:.0} events/s offered (linger {} ms): p50 {:.1} ms, p99 {:.1} ms, {:.1}% within 25 ms ({:.0} events)",
                "",
                scenario.latency.offered_rate,
                scenario.latency.linger_ms,
                latency.p50_ms,
                latency.p99_ms,
                latency.share_within_25_ms * 100.0,
                latency.events
            );
        }
        let worker = &scenario.latency.worker;
        println!(
            "{:<10} consumed -> audit commit (the worker's part): p50 {:.1} ms, p99 {:.1} ms, {:.1}% within 25 ms",
            "",
            worker.p50_ms,
            worker.p99_ms,
            worker.share_within_25_ms * 100.0
        );
        let stages = |means: &std::collections::BTreeMap<String, f64>| {
            means.iter().map(|(stage, ms)| format!("{stage} {ms:.2} ms")).collect::<Vec<_>>().join(", ")
        };
        println!("{:<10} stages per batch: {}", "", stages(&scenario.stage_mean_ms));
        println!("{:<10} stages per batch at the offered rate: {}", "", stages(&scenario.latency.stage_mean_ms));
    }
    let rate = |name: &str| report.scenarios.iter().find(|scenario| scenario.name == name).map(|s| s.events_per_second);
    if let (Some(empty), Some(prefilled)) = (rate("champion"), rate("prefilled")) {
        println!("ingest with a prefilled audit table / with an empty one: {:.2}", prefilled / empty);
    }
    print_pairs(report);
    for run in &report.recovery {
        println!(
            "recovery, kill -9 -> first new audit row (session timeout {} ms, {} kills): median {:.2} s, min {:.2}, max {:.2}",
            run.session_timeout_ms, run.kills, run.median_seconds, run.min_seconds, run.max_seconds
        );
    }
}

/// Each champion/peer pair, its ratio, and the median and range of the ratios.
fn print_pairs(report: &Report) {
    if report.peer.is_empty() {
        return;
    }
    let champions = report.scenarios.iter().filter(|scenario| scenario.name == "champion");
    println!();
    println!(
        "{:<6} {:>14} {:>12} {:>10} | {:>14} {:>12} {:>10} | {:>9} {:>9}",
        "pair", "worker ev/s", "µs CPU/ev", "PG µs/row", "peer ev/s", "µs CPU/ev", "PG µs/row", "broker/ev", "ratio"
    );
    let mut ratios = Vec::new();
    for (index, (worker, peer)) in champions.zip(&report.peer).enumerate() {
        let ratio = worker.events_per_second / peer.events_per_second;
        ratios.push(ratio);
        let broker = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |value| format!("{value:.1}"));
        println!(
            "{:<6} {:>14.0} {:>12.2} {:>10.1} | {:>14.0} {:>12.2} {:>10.1} | {:>4}/{:<4} {:>9.2}",
            index + 1,
            worker.events_per_second,
            worker.cpu_microseconds_per_decision,
            worker.database_cpu_microseconds_per_row,
            peer.events_per_second,
            peer.cpu_microseconds_per_event,
            peer.database_cpu_microseconds_per_row,
            broker(worker.broker_cpu_microseconds_per_event),
            broker(peer.broker_cpu_microseconds_per_event),
            ratio
        );
    }
    ratios.sort_by(f64::total_cmp);
    if let (Some(first), Some(last)) = (ratios.first(), ratios.last()) {
        println!(
            "worker / peer events/s: median {:.2}x over {} pairs (range {first:.2}-{last:.2}); broker/ev is Tansu's µs per event, worker/peer",
            ratios[ratios.len() / 2],
            ratios.len()
        );
    }
}
