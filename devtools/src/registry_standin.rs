//! DEVELOPMENT STAND-IN for the subset of the Confluent Schema Registry REST API that the
//! worker and the replayer use. Not for production: use Confluent Schema Registry, Karapace,
//! Apicurio or Redpanda. No auth, no deletes, one process. Compatibility is checked as
//! Confluent's registry does ([`compatibility`], default BACKWARD: 409 with error code 409).
//!
//! Endpoints: `POST /subjects/{subject}/versions` (register; same schema → same id),
//! `POST /subjects/{subject}` (look up), `GET /subjects`, `GET /subjects/{subject}/versions`,
//! `GET /subjects/{subject}/versions/{version|latest}`, `GET /schemas/ids/{id}`,
//! `GET|PUT /config`, `GET|PUT /config/{subject}`,
//! `POST /compatibility/subjects/{subject}/versions/{version|latest}`; anything else is a JSON 404.

pub mod compatibility;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use compatibility::Compatibility;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Registered schemas: ids are positions in `schemas` + 1, versions positions in a subject's list + 1.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RegistryState {
    schemas: Vec<StoredSchema>,
    subjects: BTreeMap<String, Vec<u32>>,
    /// The registry-wide level.
    #[serde(default)]
    compatibility: Compatibility,
    /// Subject-level overrides.
    #[serde(default)]
    subject_compatibility: BTreeMap<String, Compatibility>,
}

/// A schema as registered (returned as is, logical types and docs included) and its parsing
/// canonical form (used to recognise the same schema written differently).
#[derive(Debug, Serialize, Deserialize)]
struct StoredSchema {
    text: String,
    canonical: String,
}

impl RegistryState {
    /// Registers `schema` under `subject`; returns its id. Identical schemas share an id, and
    /// registering a subject's existing schema again adds no version. A new version must pass
    /// the subject's compatibility level.
    pub fn register(&mut self, subject: &str, schema: &str) -> Result<u32, ApiError> {
        let canonical = canonical(schema).map_err(ApiError::InvalidSchema)?;
        let known = self.id_of(&canonical);
        let versions = self.subjects.get(subject).map(Vec::as_slice).unwrap_or_default();
        if known.is_none_or(|id| !versions.contains(&id)) {
            let texts: Vec<&str> = versions.iter().filter_map(|id| self.schema(*id)).collect();
            self.level(subject).check(&texts, schema).map_err(ApiError::Incompatible)?;
        }
        let id = match known {
            Some(id) => id,
            None => {
                self.schemas.push(StoredSchema { text: schema.to_owned(), canonical });
                self.schemas.len() as u32
            }
        };
        let versions = self.subjects.entry(subject.to_owned()).or_default();
        if !versions.contains(&id) {
            versions.push(id);
        }
        Ok(id)
    }

    /// The level `subject` is checked at: its own, else the registry's.
    pub fn level(&self, subject: &str) -> Compatibility {
        self.subject_compatibility.get(subject).copied().unwrap_or(self.compatibility)
    }

    /// The schema text with `id`, as registered.
    pub fn schema(&self, id: u32) -> Option<&str> {
        self.schemas.get((id as usize).checked_sub(1)?).map(|stored| stored.text.as_str())
    }

    /// The id of the schema whose canonical form is `canonical`.
    fn id_of(&self, canonical: &str) -> Option<u32> {
        self.schemas.iter().position(|known| known.canonical == canonical).map(|index| index as u32 + 1)
    }

    /// (version, id) of `subject`'s `version` ("latest" or a number).
    pub fn version(&self, subject: &str, version: &str) -> Result<(u32, u32), ApiError> {
        let versions = self.subjects.get(subject).ok_or(ApiError::SubjectNotFound)?;
        let index = match version {
            "latest" | "-1" => versions.len().checked_sub(1),
            number => number.parse::<usize>().ok().and_then(|n| n.checked_sub(1)),
        }
        .filter(|index| *index < versions.len())
        .ok_or(ApiError::VersionNotFound)?;
        Ok((index as u32 + 1, versions[index]))
    }
}

/// Avro schemas are compared by their parsed canonical form.
fn canonical(schema: &str) -> Result<String, String> {
    apache_avro::Schema::parse_str(schema)
        .map(|parsed| parsed.canonical_form())
        .map_err(|error| format!("invalid Avro schema: {error}"))
}

/// Error answers in the registry's format.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    SubjectNotFound,
    VersionNotFound,
    SchemaNotFound,
    InvalidSchema(String),
    Unsupported(String),
    Incompatible(String),
    InvalidLevel(String),
    NoSubjectLevel(String),
    NotFound,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            Self::SubjectNotFound => (StatusCode::NOT_FOUND, 40401, "Subject not found".to_owned()),
            Self::VersionNotFound => (StatusCode::NOT_FOUND, 40402, "Version not found".to_owned()),
            Self::SchemaNotFound => (StatusCode::NOT_FOUND, 40403, "Schema not found".to_owned()),
            Self::InvalidSchema(message) => (StatusCode::UNPROCESSABLE_ENTITY, 42201, message),
            Self::Unsupported(message) => (StatusCode::UNPROCESSABLE_ENTITY, 42202, message),
            Self::Incompatible(message) => (StatusCode::CONFLICT, 409, message),
            Self::InvalidLevel(message) => (StatusCode::UNPROCESSABLE_ENTITY, 42203, message),
            Self::NoSubjectLevel(subject) => (
                StatusCode::NOT_FOUND,
                40408,
                format!("Subject '{subject}' does not have subject-level compatibility configured"),
            ),
            Self::NotFound => (StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found".to_owned()),
        };
        answer(status, json!({ "error_code": code, "message": message }))
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<RegistryState>>,
    state_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterRequest {
    schema: String,
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

/// The stand-in's routes over `state`, persisted to `state_file` after each registration if given.
pub fn router(state: RegistryState, state_file: Option<PathBuf>) -> Router {
    Router::new()
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", get(list_versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(get_version))
        .route("/schemas/ids/{id}", get(get_by_id))
        .route("/config", get(get_config).put(put_config))
        .route("/config/{subject}", get(get_subject_config).put(put_subject_config))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(test_compatibility))
        .fallback(|| async { ApiError::NotFound })
        .with_state(Shared { state: Arc::new(Mutex::new(state)), state_file })
}

/// Serves on `address` until `shutdown`; loads and persists `state_file` when given.
pub async fn serve(
    address: SocketAddr,
    state_file: Option<PathBuf>,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let state = match &state_file {
        Some(path) if path.exists() => serde_json::from_slice(&std::fs::read(path)?)?,
        _ => RegistryState::default(),
    };
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let app = router(state, state_file);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    });
    Ok(bound)
}

fn with_state<T>(shared: &Shared, f: impl FnOnce(&mut RegistryState) -> T) -> T {
    let mut guard = shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut guard)
}

async fn list_subjects(State(shared): State<Shared>) -> Response {
    let subjects: Vec<String> = with_state(&shared, |state| state.subjects.keys().cloned().collect());
    answer(StatusCode::OK, json!(subjects))
}

async fn list_versions(State(shared): State<Shared>, Path(subject): Path<String>) -> Result<Response, ApiError> {
    let count =
        with_state(&shared, |state| state.subjects.get(&subject).map(Vec::len)).ok_or(ApiError::SubjectNotFound)?;
    Ok(answer(StatusCode::OK, json!((1..=count).collect::<Vec<_>>())))
}

async fn register(
    State(shared): State<Shared>,
    Path(subject): Path<String>,
    Json(request): Json<RegisterRequest>,
) -> Result<Response, ApiError> {
    check_request(&request)?;
    let id = with_state(&shared, |state| state.register(&subject, &request.schema))?;
    persist(&shared);
    Ok(answer(StatusCode::OK, json!({ "id": id })))
}

async fn lookup(
    State(shared): State<Shared>,
    Path(subject): Path<String>,
    Json(request): Json<RegisterRequest>,
) -> Result<Response, ApiError> {
    check_request(&request)?;
    let wanted = canonical(&request.schema).map_err(ApiError::InvalidSchema)?;
    with_state(&shared, |state| {
        let versions = state.subjects.get(&subject).ok_or(ApiError::SubjectNotFound)?;
        let id = state.id_of(&wanted).ok_or(ApiError::SchemaNotFound)?;
        let index = versions.iter().position(|known| *known == id).ok_or(ApiError::SchemaNotFound)?;
        let schema = state.schema(id).unwrap_or_default();
        Ok(answer(StatusCode::OK, json!({ "subject": subject, "version": index + 1, "id": id, "schema": schema })))
    })
}

async fn get_version(
    State(shared): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    with_state(&shared, |state| {
        let (version, id) = state.version(&subject, &version)?;
        let schema = state.schema(id).ok_or(ApiError::SchemaNotFound)?;
        Ok(answer(StatusCode::OK, json!({ "subject": subject, "version": version, "id": id, "schema": schema })))
    })
}

async fn get_by_id(State(shared): State<Shared>, Path(id): Path<u32>) -> Result<Response, ApiError> {
    let schema = with_state(&shared, |state| state.schema(id).map(str::to_owned)).ok_or(ApiError::SchemaNotFound)?;
    Ok(answer(StatusCode::OK, json!({ "schema": schema })))
}

#[derive(Deserialize)]
struct LevelRequest {
    compatibility: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigQuery {
    #[serde(default)]
    default_to_global: bool,
}

async fn get_config(State(shared): State<Shared>) -> Response {
    let level = with_state(&shared, |state| state.compatibility);
    answer(StatusCode::OK, json!({ "compatibilityLevel": level.to_string() }))
}

async fn put_config(State(shared): State<Shared>, Json(request): Json<LevelRequest>) -> Result<Response, ApiError> {
    let level: Compatibility = request.compatibility.parse().map_err(ApiError::InvalidLevel)?;
    with_state(&shared, |state| state.compatibility = level);
    persist(&shared);
    Ok(answer(StatusCode::OK, json!({ "compatibility": level.to_string() })))
}

async fn get_subject_config(
    State(shared): State<Shared>,
    Path(subject): Path<String>,
    Query(query): Query<ConfigQuery>,
) -> Result<Response, ApiError> {
    let level = with_state(&shared, |state| match state.subject_compatibility.get(&subject) {
        Some(level) => Some(*level),
        None => query.default_to_global.then_some(state.compatibility),
    });
    let level = level.ok_or(ApiError::NoSubjectLevel(subject))?;
    Ok(answer(StatusCode::OK, json!({ "compatibilityLevel": level.to_string() })))
}

async fn put_subject_config(
    State(shared): State<Shared>,
    Path(subject): Path<String>,
    Json(request): Json<LevelRequest>,
) -> Result<Response, ApiError> {
    let level: Compatibility = request.compatibility.parse().map_err(ApiError::InvalidLevel)?;
    with_state(&shared, |state| state.subject_compatibility.insert(subject, level));
    persist(&shared);
    Ok(answer(StatusCode::OK, json!({ "compatibility": level.to_string() })))
}

/// Whether `schema` may follow `subject`'s `version` under the subject's level (Confluent's
/// "test compatibility").
async fn test_compatibility(
    State(shared): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
    Json(request): Json<RegisterRequest>,
) -> Result<Response, ApiError> {
    check_request(&request)?;
    let new = apache_avro::Schema::parse_str(&request.schema)
        .map_err(|error| ApiError::InvalidSchema(format!("invalid Avro schema: {error}")))?;
    let (level, old) = with_state(&shared, |state| {
        let (_, id) = state.version(&subject, &version)?;
        Ok::<_, ApiError>((state.level(&subject), state.schema(id).unwrap_or_default().to_owned()))
    })?;
    let old = apache_avro::Schema::parse_str(&old).map_err(|error| ApiError::InvalidSchema(error.to_string()))?;
    let verdict = level.check_pair(&old, &new);
    let messages: Vec<String> = verdict.clone().err().into_iter().collect();
    Ok(answer(StatusCode::OK, json!({ "is_compatible": verdict.is_ok(), "messages": messages })))
}

/// Writes the state file, if there is one.
fn persist(shared: &Shared) {
    let Some(path) = &shared.state_file else { return };
    let bytes = with_state(shared, |state| serde_json::to_vec(&*state).unwrap_or_default());
    if let Err(error) = std::fs::write(path, bytes) {
        tracing::warn!(%error, "could not persist registry state");
    }
}

fn check_request(request: &RegisterRequest) -> Result<(), ApiError> {
    if request.schema_type.as_deref().is_some_and(|kind| kind != "AVRO") {
        return Err(ApiError::Unsupported("the stand-in supports AVRO schemas only".into()));
    }
    if !request.references.is_empty() {
        return Err(ApiError::Unsupported("the stand-in does not support schema references".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"long"}]}"#;
    const A_SPACED: &str = r#"{ "type": "record", "name": "A", "fields": [ {"name": "x", "type": "long"} ] }"#;
    const B: &str = r#"{"type":"record","name":"B","fields":[{"name":"y","type":"string"}]}"#;

    /// Ids are shared by identical schemas (whitespace aside), versions grow per subject only
    /// for new schemas, and lookups answer with the registry's error codes.
    #[test]
    fn registration_ids_versions_and_errors() {
        let mut state = RegistryState::default();
        assert_eq!(state.register("s-value", A), Ok(1));
        assert_eq!(state.register("s-value", A_SPACED), Ok(1));
        assert_eq!(state.register("t-value", A), Ok(1));
        assert!(matches!(state.register("s-value", B), Err(ApiError::Incompatible(_))), "BACKWARD by default");
        state.subject_compatibility.insert("s-value".into(), Compatibility::None);
        assert_eq!(state.register("s-value", B), Ok(2));
        assert_eq!(state.version("s-value", "latest"), Ok((2, 2)));
        assert_eq!(state.version("s-value", "1"), Ok((1, 1)));
        assert_eq!(state.version("t-value", "latest"), Ok((1, 1)));
        assert_eq!(state.version("s-value", "3"), Err(ApiError::VersionNotFound));
        assert_eq!(state.version("s-value", "0"), Err(ApiError::VersionNotFound));
        assert_eq!(state.version("nope", "latest"), Err(ApiError::SubjectNotFound));
        assert!(state.schema(2).unwrap().contains("\"B\""));
        assert_eq!(state.schema(0), None);
        assert_eq!(state.schema(3), None);
        assert!(state.register("s-value", "{not avro").is_err());
        let logical = r#"{"type":"record","name":"T","fields":[{"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
        let id = state.register("u-value", logical).unwrap();
        assert_eq!(state.schema(id), Some(logical), "returned as registered, logical type kept");
    }
}
