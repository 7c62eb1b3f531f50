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
    assert_eq!(decoder.decode(id, body).unwrap().view(), application.view());

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

/// Requests as Confluent's own clients send them (JSON with the registry's content type), against
/// a subject holding the LoanApplication schema: under the default BACKWARD level, changing
/// `credit_amount` from double to string and adding a required field without a default answer
/// 409 (error code 409); an optional field with a default registers; the config and the
/// compatibility test endpoints answer as Confluent's do, and unknown paths with a JSON 404.
#[tokio::test]
async fn compatibility_is_checked_as_confluent_checks_it() {
    let (url, shutdown) = start().await;
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut request = client.request(method, format!("{url}{path}"));
        if let Some(body) = body {
            request = request.header("Content-Type", "application/vnd.schemaregistry.v1+json").body(body.to_string());
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let schema = |text: String| Some(serde_json::json!({ "schema": text }));
    let subject = "/subjects/apps-value/versions";
    let v1 = LOAN_APPLICATION_SCHEMA.to_owned();
    let string_amount = v1.replacen(
        r#"{"name": "credit_amount", "type": ["null", "double"]"#,
        r#"{"name": "credit_amount", "type": ["null", "string"]"#,
        1,
    );
    assert_ne!(string_amount, v1, "the schema has a nullable double credit_amount");
    let required = v1.replacen(
        r#"{"name": "application_id", "type": "string""#,
        r#"{"name": "channel", "type": "string"},
    {"name": "application_id", "type": "string""#,
        1,
    );
    let optional = v1.replacen(
        r#"{"name": "application_id", "type": "string""#,
        r#"{"name": "channel", "type": ["null", "string"], "default": null},
    {"name": "application_id", "type": "string""#,
        1,
    );
    assert_eq!(call(reqwest::Method::POST, subject, schema(v1.clone())).await.0, 200);
    for incompatible in [&string_amount, &required] {
        let (status, body) = call(reqwest::Method::POST, subject, schema(incompatible.clone())).await;
        assert_eq!((status, body["error_code"].as_u64()), (409, Some(409)), "{body}");
        let (status, body) = call(
            reqwest::Method::POST,
            "/compatibility/subjects/apps-value/versions/latest",
            schema(incompatible.clone()),
        )
        .await;
        assert_eq!((status, body["is_compatible"].as_bool()), (200, Some(false)), "{body}");
    }
    let (status, body) = call(reqwest::Method::POST, subject, schema(optional)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        call(reqwest::Method::GET, "/config", None).await,
        (200, serde_json::json!({ "compatibilityLevel": "BACKWARD" }))
    );
    let (status, body) = call(reqwest::Method::GET, "/config/apps-value", None).await;
    assert_eq!((status, body["error_code"].as_u64()), (404, Some(40408)));
    let none = Some(serde_json::json!({ "compatibility": "NONE" }));
    assert_eq!(call(reqwest::Method::PUT, "/config/apps-value", none).await.0, 200);
    assert_eq!(call(reqwest::Method::POST, subject, schema(string_amount)).await.0, 200, "NONE accepts it");
    let sideways = Some(serde_json::json!({ "compatibility": "SIDEWAYS" }));
    assert_eq!(call(reqwest::Method::PUT, "/config", sideways).await.1["error_code"].as_u64(), Some(42203));
    let (status, body) = call(reqwest::Method::GET, "/no/such/endpoint", None).await;
    assert_eq!((status, body["error_code"].as_u64()), (404, Some(404)));
    shutdown.cancel();
}
