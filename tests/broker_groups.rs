//! librdkafka consumer groups against the local Tansu broker: two consumers in one group share
//! the partitions, and a rebalance in the middle of the stream loses no record.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

const RECORDS: usize = 4000;
const PARTITIONS: i32 = 4;

/// Consumes like the worker does (store after processing, commit on revoke) until told to stop;
/// returns the keys it saw and the partitions it was ever assigned.
fn consume(group: String, topic: String, seen: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>) -> HashSet<i32> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BOOTSTRAP)
        .set("group.id", &group)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "2000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut partitions = HashSet::new();
    while !stop.load(Ordering::Acquire) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            seen.lock().unwrap().push(String::from_utf8_lossy(message.key().unwrap()).into_owned());
            consumer.store_offset_from_message(&message).unwrap();
            std::thread::sleep(Duration::from_millis(3));
        }
        if let Ok(assignment) = consumer.assignment() {
            partitions.extend(assignment.elements().iter().map(|element| element.partition()));
        }
    }
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    partitions
}

/// Consumer A starts alone; consumer B joins mid-stream. Every produced key is consumed at
/// least once, and after the rebalance both consumers own partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_share_partitions_and_a_rebalance_loses_nothing() {
    stack();
    let topic = unique("groups");
    create_topics(&[&topic], PARTITIONS).await;
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", BOOTSTRAP).create().unwrap();
    let sends = (0..RECORDS).map(|index| {
        let producer = &producer;
        let topic = topic.as_str();
        async move {
            let key = format!("k{index:05}");
            producer.send(FutureRecord::to(topic).key(&key).payload("v"), Duration::from_secs(30)).await.map(|_| ())
        }
    });
    for result in futures::future::join_all(sends).await {
        result.expect("delivered");
    }

    let group = unique("groups-group");
    let (seen_a, seen_b) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |seen: &Arc<Mutex<Vec<String>>>| {
        let (group, topic, seen, stop) = (group.clone(), topic.clone(), Arc::clone(seen), Arc::clone(&stop));
        std::thread::spawn(move || consume(group, topic, seen, stop))
    };
    let first = spawn(&seen_a);
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen_a.lock().unwrap().len() < RECORDS / 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen_a.lock().unwrap().len() < RECORDS, "B must join mid-stream");
    let second = spawn(&seen_b);

    let expected: HashSet<String> = (0..RECORDS).map(|index| format!("k{index:05}")).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let union: HashSet<String> =
            seen_a.lock().unwrap().iter().chain(seen_b.lock().unwrap().iter()).cloned().collect();
        if union == expected || Instant::now() > deadline {
            stop.store(true, Ordering::Release);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (partitions_a, partitions_b) = (first.join().unwrap(), second.join().unwrap());
    let union: HashSet<String> = seen_a.lock().unwrap().iter().chain(seen_b.lock().unwrap().iter()).cloned().collect();
    let missing = expected.difference(&union).count();
    assert_eq!(missing, 0, "records never delivered");
    assert!(!seen_b.lock().unwrap().is_empty(), "the second consumer received records");
    assert!(!partitions_b.is_empty(), "the second consumer was assigned partitions");
    assert_eq!(partitions_a.union(&partitions_b).count(), PARTITIONS as usize);
}
