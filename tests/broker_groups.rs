//! The worker's own consumer (`sources::Source`, as the outcomes consumer runs it: offsets
//! stored after each batch, auto-committed) in a consumer group on the local Tansu broker: two
//! members share the partitions under cooperative-sticky assignment, the rebalance when the
//! second joins mid-stream loses no record, and every offset ends committed.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use credit_worker::sources::{next_offsets, PartitionEvent, Source, SourceOptions};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const RECORDS: usize = 4000;
const PARTITIONS: i32 = 4;

/// What one member saw: the keys of its records, and the partitions it was given and lost.
#[derive(Default)]
struct Seen {
    keys: Vec<String>,
    assigned: HashSet<i32>,
    revoked: HashSet<i32>,
}

/// Joins `group` as a `Source` and consumes until aborted: each batch's keys are recorded, then
/// its offsets stored (25 ms of "work" per batch of at most 10, so the stream lasts about 10 s
/// and a joining member finds work left).
fn join(group: &str, topic: &str, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    let properties = BTreeMap::new();
    let options = SourceOptions {
        bootstrap_servers: BOOTSTRAP,
        group_id: group,
        topic,
        session_timeout_ms: 6000,
        instance_id: None,
        transactional: false,
        fetch_wait_max_ms: 10,
        client_properties: &properties,
    };
    let (source, mut events) = Source::subscribe(&options, None, None).unwrap();
    let on_events = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let mut seen = on_events.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match event {
                PartitionEvent::Assigned { partitions, .. } => seen.assigned.extend(partitions.iter().map(|(p, _)| *p)),
                PartitionEvent::Revoked { partitions } => seen.revoked.extend(partitions),
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let batch = source.next_batch(10, Duration::from_millis(20)).await;
            let keys = batch.iter().map(|record| String::from_utf8_lossy(record.key.as_deref().unwrap()).into_owned());
            seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).keys.extend(keys);
            source.store(&next_offsets(&batch));
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
}

/// Member A starts alone; member B joins mid-stream. Every produced key is consumed, B is
/// given partitions that A gives up (A sees them revoked), both end up owning partitions, and
/// the group's committed offsets reach the end of every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_share_partitions_and_a_rebalance_loses_nothing() {
    stack();
    let topic = unique("groups");
    create_topics(&[&topic], PARTITIONS).await;
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", BOOTSTRAP).create().unwrap();
    let sends = (0..RECORDS).map(|index| {
        let (producer, topic) = (&producer, topic.as_str());
        async move {
            let key = format!("k{index:05}");
            producer.send(FutureRecord::to(topic).key(&key).payload("v"), Duration::from_secs(30)).await.map(|_| ())
        }
    });
    for result in futures::future::join_all(sends).await {
        result.expect("delivered");
    }

    let group = unique("groups-group");
    let (seen_a, seen_b) = (Arc::new(Mutex::new(Seen::default())), Arc::new(Mutex::new(Seen::default())));
    let first = join(&group, &topic, Arc::clone(&seen_a));
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen_a.lock().unwrap().keys.len() < RECORDS / 10 {
        assert!(Instant::now() < deadline, "the first member consumed nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_a.lock().unwrap().keys.len() < RECORDS, "B must join mid-stream");
    let second = join(&group, &topic, Arc::clone(&seen_b));

    let expected: HashSet<String> = (0..RECORDS).map(|index| format!("k{index:05}")).collect();
    let union = || -> HashSet<String> {
        let (a, b) = (seen_a.lock().unwrap(), seen_b.lock().unwrap());
        a.keys.iter().chain(b.keys.iter()).cloned().collect()
    };
    let committed = || -> i64 { committed_offsets(&group, &topic, PARTITIONS).values().sum() };
    let deadline = Instant::now() + Duration::from_secs(90);
    while union() != expected || committed() != RECORDS as i64 {
        assert!(
            Instant::now() < deadline,
            "{} of {RECORDS} keys consumed, {} offsets committed",
            union().len(),
            committed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.abort();
    second.abort();
    let (a, b) = (seen_a.lock().unwrap(), seen_b.lock().unwrap());
    println!(
        "A: {} records, assigned {:?}, revoked {:?}; B: {} records, assigned {:?}",
        a.keys.len(),
        a.assigned,
        a.revoked,
        b.keys.len(),
        b.assigned
    );
    assert!(!b.keys.is_empty() && !b.assigned.is_empty(), "the second member was given partitions and records");
    assert!(b.assigned.is_subset(&a.revoked), "B got only partitions A gave up: {:?} {:?}", b.assigned, a.revoked);
    assert!(a.assigned.difference(&a.revoked).count() > 0, "A kept partitions (cooperative-sticky)");
    assert_eq!(a.assigned.union(&b.assigned).count(), PARTITIONS as usize);
}
