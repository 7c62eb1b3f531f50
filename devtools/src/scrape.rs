//! Reading the worker's metrics exactly: its `/metrics` endpoint is asked for the protobuf
//! exposition, decoded into the `prometheus` crate's own `MetricFamily` messages; samples are
//! then found by name and labels, whatever their order. Histograms read as their `_bucket`
//! (`le` label), `_sum` and `_count` series, as in the text format.

use anyhow::{Context, Result};
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{Encoder, ProtobufEncoder, Registry};

/// A scrape, as flat samples.
pub struct Exposition {
    samples: Vec<Sample>,
}

/// One series' value.
pub struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

impl Exposition {
    /// Decodes a protobuf exposition (length-delimited `MetricFamily` messages).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut input = protobuf::CodedInputStream::from_bytes(bytes);
        let mut samples = Vec::new();
        while !input.eof().context("reading the protobuf exposition")? {
            let family: MetricFamily = input.read_message().context("decoding a MetricFamily")?;
            flatten(&family, &mut samples);
        }
        Ok(Self { samples })
    }

    /// The metrics of a registry in this process.
    pub fn of_registry(registry: &Registry) -> Result<Self> {
        let mut bytes = Vec::new();
        ProtobufEncoder::new().encode(&registry.gather(), &mut bytes)?;
        Self::decode(&bytes)
    }

    /// Fetches and decodes `url` (a `/metrics` endpoint that speaks the protobuf exposition).
    pub async fn fetch(url: &str) -> Result<Self> {
        let response = reqwest::Client::new()
            .get(url)
            .header(reqwest::header::ACCEPT, prometheus::PROTOBUF_FORMAT)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .error_for_status()?;
        Self::decode(&response.bytes().await?)
    }

    /// Every sample of the series `name` whose labels include all of `labels`.
    pub fn samples<'a>(&'a self, name: &'a str, labels: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = &'a Sample> {
        self.samples
            .iter()
            .filter(move |sample| sample.name == name)
            .filter(move |sample| labels.iter().all(|(key, value)| sample.label(key) == Some(*value)))
    }

    /// The sum over [`Exposition::samples`]; 0 when there are none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels).map(|sample| sample.value).fold(0.0, |sum, value| sum + value)
    }

    /// The value of the first sample of `name` with `labels`, if there is one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(name, labels).next().map(|sample| sample.value)
    }
}

fn flatten(family: &MetricFamily, out: &mut Vec<Sample>) {
    let name = family.name();
    for metric in &family.metric {
        let labels: Vec<(String, String)> =
            metric.label.iter().map(|pair| (pair.name().to_owned(), pair.value().to_owned())).collect();
        let mut push = |suffix: &str, extra: Option<(&str, String)>, value: f64| {
            let mut labels = labels.clone();
            labels.extend(extra.map(|(key, value)| (key.to_owned(), value)));
            out.push(Sample { name: format!("{name}{suffix}"), labels, value });
        };
        match family.get_field_type() {
            MetricType::COUNTER => push("", None, metric.counter.value()),
            MetricType::GAUGE => push("", None, metric.gauge.value()),
            MetricType::UNTYPED => push("", None, metric.untyped.value()),
            MetricType::HISTOGRAM => {
                let histogram = &metric.histogram;
                for bucket in &histogram.bucket {
                    let le = Some(("le", bucket.upper_bound().to_string()));
                    push("_bucket", le, bucket.cumulative_count() as f64);
                }
                push("_sum", None, histogram.sample_sum());
                push("_count", None, histogram.sample_count() as f64);
            }
            MetricType::SUMMARY => {
                let summary = &metric.summary;
                push("_sum", None, summary.sample_sum());
                push("_count", None, summary.sample_count() as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounterVec, Opts};

    /// Samples are found by name and by labels in any order, including values the text format
    /// would need escaping for; NaN gauges stay NaN; histograms read as bucket, sum and count;
    /// absent series sum to 0.
    #[test]
    fn finds_samples_by_name_and_labels() {
        let registry = Registry::new();
        let counter = IntCounterVec::new(Opts::new("x_total", "x"), &["a", "group"]).unwrap();
        let gauge = Gauge::new("g", "g").unwrap();
        let histogram = HistogramVec::new(HistogramOpts::new("h_seconds", "h").buckets(vec![1.0]), &["stage"]).unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        registry.register(Box::new(gauge.clone())).unwrap();
        registry.register(Box::new(histogram.clone())).unwrap();
        counter.with_label_values(&["1", "<=25"]).inc_by(3);
        counter.with_label_values(&["1", "a,b=\"c\""]).inc_by(4);
        gauge.set(f64::NAN);
        histogram.with_label_values(&["score"]).observe(0.5);
        histogram.with_label_values(&["score"]).observe(2.0);

        let exposition = Exposition::of_registry(&registry).unwrap();
        assert_eq!(exposition.sum("x_total", &[]), 7.0);
        assert_eq!(exposition.value("x_total", &[("group", "<=25"), ("a", "1")]), Some(3.0));
        assert_eq!(exposition.value("x_total", &[("group", "a,b=\"c\"")]), Some(4.0));
        assert!(exposition.value("g", &[]).unwrap().is_nan());
        assert_eq!(exposition.value("h_seconds_count", &[("stage", "score")]), Some(2.0));
        assert_eq!(exposition.value("h_seconds_sum", &[("stage", "score")]), Some(2.5));
        assert_eq!(exposition.value("h_seconds_bucket", &[("le", "1")]), Some(1.0));
        assert_eq!(exposition.sum("missing", &[]), 0.0);
        assert!(Exposition::decode(b"\x05abc").is_err(), "a truncated message is an error");
    }
}
