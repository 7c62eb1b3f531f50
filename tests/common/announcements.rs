//! The decisions topic read back and checked against the audit table.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use super::{read_topic, read_topic_keys, read_topic_uncommitted};

/// A `LoanDecision` from its Confluent-framed Avro value.
pub fn decode_decision(value: &[u8]) -> credit_worker::domain::LoanDecision {
    assert_eq!(value[0], 0, "Confluent magic byte");
    let reader =
        apache_avro::reader::datum::GenericDatumReader::builder(&credit_worker::domain::LOAN_DECISION).build().unwrap();
    let datum = reader.read_value(&mut &value[5..]).unwrap();
    apache_avro::from_value(&datum).unwrap()
}

/// One record of the decisions topic.
#[derive(Debug, Clone)]
pub struct Announced {
    pub application_id: String,
    /// The `credit.transaction` header: `<producer run>:<transaction number>`.
    pub transaction: String,
    pub partition: i32,
    pub offset: i64,
    pub source_partition: i32,
    pub source_offset: i64,
}

impl Announced {
    /// The producer run and the transaction's number in it.
    pub fn run_and_number(&self) -> (&str, u64) {
        let (run, number) = self.transaction.split_once(':').expect("run:number");
        (run, number.parse().expect("transaction number"))
    }
}

/// What the decisions topic holds for a run's applications.
#[derive(Debug)]
pub struct Announcements {
    /// Records a `read_committed` consumer reads.
    pub committed: usize,
    /// Distinct applications among them.
    pub applications: usize,
    /// Records a `read_uncommitted` consumer reads.
    pub uncommitted: usize,
    /// The records read (`read_committed`).
    pub records: Vec<Announced>,
}

impl Announcements {
    /// Announcements of an application already announced (`read_committed`).
    pub fn duplicates(&self) -> usize {
        self.committed - self.applications
    }

    /// Transactions whose records were all announced again later ("whole"), and those of which
    /// only some were ("partial"). A transaction that was left open by a killed producer, or
    /// aborted, is whole: Apache Kafka hides its records from `read_committed` readers, Tansu
    /// does not. A partial one would mean an announcement repeated outside such a transaction.
    pub fn repeated_transactions(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut last: HashMap<&str, (i64, usize)> = HashMap::new();
        for (index, record) in self.records.iter().enumerate() {
            let entry = last.entry(&record.application_id).or_insert((record.offset, index));
            if record.offset >= entry.0 {
                *entry = (record.offset, index);
            }
        }
        let mut repeated: HashMap<&str, (usize, usize)> = HashMap::new();
        for (index, record) in self.records.iter().enumerate() {
            let counts = repeated.entry(&record.transaction).or_default();
            counts.1 += 1;
            if last[record.application_id.as_str()].1 != index {
                counts.0 += 1;
            }
        }
        let (mut whole, mut partial) = (BTreeSet::new(), BTreeSet::new());
        for (transaction, (again, total)) in repeated {
            if again == total {
                whole.insert(transaction.to_owned());
            } else if again > 0 {
                partial.insert(transaction.to_owned());
            }
        }
        (whole, partial)
    }

    /// Duplicates left once the records of `hidden` transactions are taken out: what a
    /// `read_committed` reader of Apache Kafka would count if those were the aborted ones.
    pub fn duplicates_without(&self, hidden: &BTreeSet<String>) -> usize {
        let visible: Vec<&Announced> =
            self.records.iter().filter(|record| !hidden.contains(&record.transaction)).collect();
        let distinct: HashSet<&str> = visible.iter().map(|record| record.application_id.as_str()).collect();
        visible.len() - distinct.len()
    }
}

/// Reads the decisions topic and checks every announcement against the audit table: each
/// application has its decision announced, and every announcement (a first one or one announced
/// again) equals its audit row: outcome, probability (bits), model and reasons.
pub async fn announcements_match_audit(pool: &sqlx::PgPool, topic: &str, expected: usize) -> Announcements {
    let all_keys = read_topic_keys(topic, expected, Duration::from_secs(120));
    let announced = read_topic(topic, all_keys.len().max(expected) + 1, Duration::from_secs(5));
    let uncommitted = read_topic_uncommitted(topic, announced.len() + 1, Duration::from_secs(3)).len();
    let rows: Vec<(String, String, f64, String, serde_json::Value)> = sqlx::query_as(
        "SELECT application_id, decision, probability_of_default, model_sha256, reasons FROM decision_audit",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let audited: HashMap<String, (String, f64, String, Vec<String>)> = rows
        .into_iter()
        .map(|(id, decision, probability, sha, reasons)| {
            let codes = reasons.as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap().to_owned()).collect();
            (id, (decision, probability, sha, codes))
        })
        .collect();
    let (mut seen, mut records) = (HashSet::new(), Vec::with_capacity(announced.len()));
    for record in &announced {
        let decision = decode_decision(record.value.as_ref().unwrap());
        let id = &decision.application_id;
        let (outcome, probability, sha, codes) = &audited[id];
        assert_eq!(decision.decision.as_str(), outcome, "{id}");
        assert_eq!(decision.probability_of_default.to_bits(), probability.to_bits(), "{id}");
        assert_eq!(&decision.model_sha256, sha, "{id}");
        let announced_codes: Vec<String> = decision.reasons.iter().map(|reason| reason.code.clone()).collect();
        assert_eq!(&announced_codes, codes, "{id}");
        seen.insert(id.clone());
        records.push(Announced {
            application_id: id.clone(),
            transaction: record.headers.get("credit.transaction").cloned().unwrap_or_default(),
            partition: record.partition,
            offset: record.offset,
            source_partition: decision.source_partition,
            source_offset: decision.source_offset,
        });
    }
    assert_eq!(seen.len(), expected, "every application announced");
    Announcements { committed: announced.len(), applications: seen.len(), uncommitted, records }
}
