//! The schema registry stand-in against the real client library (schema_registry_converter):
//! register through the encoder, decode through the decoder, and the registry's error answers.

mod common;

use std::time::Duration;

use credit_devtools::registry_standin;
use credit_worker::codec::{split_frame, ApplicationDecoder, CodecError, SchemaCache};
use credit_worker::domain::{CreditRequest, LoanApplication, ProtectedAttributes, LOAN_APPLICATION_SCHEMA};
use schema_registry_converter::async_impl::avro::AvroEncoder;
use schema_registry_converter::async_impl::schema_registry::{get_schema_by_subject, SrSettings};
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};
use tokio_util::sync::CancellationToken;

async fn start() -> (String, CancellationToken) {
    let shutdown = CancellationToken::new();
    let address = registry_standin::serve("127.0.0.1:0".parse().unwrap(), None, shutdown.clone()).await.unwrap();
    (format!("http://{address}"), shutdown)
}

fn settings(url: &str) -> SrSettings {
    SrSettings::new_builder(url.to_owned()).set_timeout(Duration::from_secs(2)).build().unwrap()
}

/// An application encoded by the library's encoder (which registers the schema with the
/// stand-in) decodes back unchanged through the worker's decode path; the subject's latest
/// version is the registered schema.
#[tokio::test]
async fn encoder_registers_and_worker_decodes() {
    let (url, shutdown) = start().await;
    let encoder = AvroEncoder::new(settings(&url));
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        "apps".into(),
        false,
        SuppliedSchema::new(None, SchemaType::Avro, LOAN_APPLICATION_SCHEMA.into()),
    );
    let application = LoanApplication {
        application_id: "a-1".into(),
        event_time: 1_700_000_000_000,
        credit_request: CreditRequest {
            duration_in_month: Some(12),
            purpose: Some("business".into()),
            ..Default::default()
        },
        protected_attributes: ProtectedAttributes { age_in_years: Some(30), ..Default::default() },
    };
    let bytes = encoder.encode_struct(&application, &strategy).await.unwrap();
    let (id, body) = split_frame(Some(&bytes)).unwrap();

    let cache = SchemaCache::new(settings(&url));
    let schemas = [(id, cache.writer_schema(id).await.unwrap())].into_iter().collect();
    let schemas: std::collections::HashMap<u32, _> = schemas;
    let decoder = ApplicationDecoder::new(schemas.iter().map(|(id, schema)| (*id, &schema.parsed)));
    assert_eq!(decoder.decode(id, body).unwrap(), application);

    let latest = get_schema_by_subject(&settings(&url), &SubjectNameStrategy::TopicNameStrategy("apps".into(), false))
        .await
        .unwrap();
    assert_eq!(latest.id, id);
    shutdown.cancel();
}

/// An id the registry does not know is reported as unknown (dead-letter), while an
/// unreachable registry is reported as unavailable (wait and retry), never confused.
#[tokio::test]
async fn unknown_ids_and_unreachable_registry_are_told_apart() {
    let (url, shutdown) = start().await;
    let cache = SchemaCache::new(settings(&url));
    assert!(matches!(cache.writer_schema(4242).await, Err(CodecError::UnknownSchema(4242))));
    shutdown.cancel();

    let port = common::free_port();
    let unreachable = SchemaCache::new(settings(&format!("http://127.0.0.1:{port}")));
    assert!(matches!(unreachable.writer_schema(1).await, Err(CodecError::RegistryUnavailable(_))));
}
