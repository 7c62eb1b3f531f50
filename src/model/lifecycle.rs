//! Model lifecycle: the active (champion) model, the previous one kept loaded for rollback, and
//! an optional shadow (challenger). A change loads and verifies the new model and starts its
//! scoring threads first, then swaps a pointer; the worker takes the pointer once per batch, so
//! every batch is scored by exactly one fully loaded model.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use super::pool::ScoringPool;
use super::{ModelBundle, ModelError};
use crate::config::WorkerConfig;
use crate::domain::{Cutoffs, DecisionPolicy};
use crate::telemetry::Metrics;

/// A model ready to score: verified bundle, its own scoring threads, the cutoffs in force, and
/// the decision policy they make.
pub struct LoadedModel {
    pub bundle: Arc<ModelBundle>,
    pub pool: ScoringPool,
    pub cutoffs: Cutoffs,
    pub policy: Arc<DecisionPolicy>,
}

/// Version, hash and directory of one slot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRef {
    pub version: String,
    pub sha256: String,
    pub directory: PathBuf,
    pub approve_below: f64,
    pub decline_at_or_above: f64,
}

/// What is loaded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelStatus {
    pub active: ModelRef,
    pub previous: Option<ModelRef>,
    pub shadow: Option<ModelRef>,
}

struct Slots {
    active: Arc<LoadedModel>,
    previous: Option<Arc<LoadedModel>>,
    shadow: Option<Arc<LoadedModel>>,
}

/// The model slots and how to fill them.
pub struct ModelManager {
    models_root: PathBuf,
    config: WorkerConfig,
    metrics: Metrics,
    slots: RwLock<Slots>,
    changes: tokio::sync::Mutex<()>,
}

impl ModelManager {
    /// Loads `model.directory` (and `model.shadow_directory` if set). Blocking.
    pub fn start(config: &WorkerConfig, metrics: Metrics) -> Result<Self, ModelError> {
        let active = Arc::new(load(config, &config.model.directory)?);
        let shadow = match &config.model.shadow_directory {
            Some(directory) => {
                let shadow = load(config, directory)?;
                compatible(&active, &shadow)?;
                Some(Arc::new(shadow))
            }
            None => None,
        };
        let manager = Self {
            models_root: config.models_root(),
            config: config.clone(),
            metrics,
            slots: RwLock::new(Slots { active, previous: None, shadow }),
            changes: tokio::sync::Mutex::new(()),
        };
        manager.export_info();
        Ok(manager)
    }

    /// The model to score the next batch with.
    pub fn active(&self) -> Arc<LoadedModel> {
        Arc::clone(&self.read().active)
    }

    /// The challenger, if one is set.
    pub fn shadow(&self) -> Option<Arc<LoadedModel>> {
        self.read().shadow.clone()
    }

    /// What is loaded now.
    pub fn status(&self) -> ModelStatus {
        let slots = self.read();
        ModelStatus {
            active: model_ref(&slots.active),
            previous: slots.previous.as_deref().map(model_ref),
            shadow: slots.shadow.as_deref().map(model_ref),
        }
    }

    /// Makes `version` (a directory under the models root) active; the active one becomes previous.
    pub async fn activate(&self, version: &str) -> Result<ModelStatus, ModelError> {
        let _change = self.changes.lock().await;
        let loaded = self.load_version(version).await?;
        {
            let mut slots = self.write();
            let old = std::mem::replace(&mut slots.active, loaded);
            slots.previous = Some(old);
        }
        self.changed("activate");
        Ok(self.status())
    }

    /// Swaps the active and previous models.
    pub async fn rollback(&self) -> Result<ModelStatus, ModelError> {
        let _change = self.changes.lock().await;
        {
            let mut slots = self.write();
            let previous = slots.previous.take().ok_or(ModelError::NoPrevious)?;
            let old = std::mem::replace(&mut slots.active, previous);
            slots.previous = Some(old);
        }
        self.changed("rollback");
        Ok(self.status())
    }

    /// Sets (`Some`) or clears (`None`) the challenger.
    pub async fn set_shadow(&self, version: Option<&str>) -> Result<ModelStatus, ModelError> {
        let _change = self.changes.lock().await;
        let loaded = match version {
            Some(version) => Some(self.load_version(version).await?),
            None => None,
        };
        self.write().shadow = loaded;
        self.changed("shadow");
        Ok(self.status())
    }

    /// Counts a refused change.
    pub fn refused(&self, action: &str) {
        self.metrics.model_changes.with_label_values(&[action, "refused"]).inc();
    }

    async fn load_version(&self, version: &str) -> Result<Arc<LoadedModel>, ModelError> {
        let plain = !version.is_empty()
            && !version.starts_with('.')
            && version.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !plain {
            return Err(ModelError::InvalidVersion(version.to_owned()));
        }
        let directory = self.models_root.join(version);
        let config = self.config.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&config, &directory))
            .await
            .map_err(|_| ModelError::Interrupted)??;
        compatible(&self.active(), &loaded)?;
        Ok(Arc::new(loaded))
    }

    fn changed(&self, action: &str) {
        self.metrics.model_changes.with_label_values(&[action, "ok"]).inc();
        self.export_info();
        let status = self.status();
        tracing::info!(
            action,
            active = %status.active.version,
            active_sha256 = %status.active.sha256,
            previous = status.previous.as_ref().map(|model| model.version.as_str()).unwrap_or("-"),
            shadow = status.shadow.as_ref().map(|model| model.version.as_str()).unwrap_or("-"),
            "model lifecycle change"
        );
    }

    fn export_info(&self) {
        let status = self.status();
        self.metrics.model_info.reset();
        self.metrics.model_info.with_label_values(&[&status.active.version, &status.active.sha256]).set(1);
        self.metrics.shadow_model_info.reset();
        if let Some(shadow) = &status.shadow {
            self.metrics.shadow_model_info.with_label_values(&[&shadow.version, &shadow.sha256]).set(1);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Slots> {
        self.slots.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Slots> {
        self.slots.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A model may replace or shadow another only with the same features in the same order: the
/// monitors' baselines and the shadow comparison rely on one feature mapping.
fn compatible(ours: &LoadedModel, theirs: &LoadedModel) -> Result<(), ModelError> {
    let (our_features, their_features) = (ours.bundle.feature_names(), theirs.bundle.feature_names());
    if our_features != their_features {
        return Err(ModelError::Incompatible {
            version: theirs.bundle.card.version.clone(),
            ours: our_features,
            theirs: their_features,
        });
    }
    Ok(())
}

fn model_ref(model: &LoadedModel) -> ModelRef {
    ModelRef {
        version: model.bundle.card.version.clone(),
        sha256: model.bundle.card.model_sha256.clone(),
        directory: model.bundle.directory.clone(),
        approve_below: model.cutoffs.approve_below,
        decline_at_or_above: model.cutoffs.decline_at_or_above,
    }
}

/// Loads and verifies a model directory and starts its scoring threads. Blocking.
pub fn load(config: &WorkerConfig, directory: &Path) -> Result<LoadedModel, ModelError> {
    let version = directory.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let bundle = ModelBundle::load(directory)
        .map_err(|source| ModelError::Load { version: version.clone(), source: Box::new(source) })?;
    let cutoffs = config
        .cutoffs(bundle.card.cutoffs)
        .map_err(|error| ModelError::Cutoffs { version: version.clone(), reason: error.to_string() })?;
    let pool = ScoringPool::start(&bundle.model_text, config.model.scoring_threads)
        .map_err(|source| ModelError::Load { version, source: Box::new(source) })?;
    let card = &bundle.card;
    let policy = DecisionPolicy::new(&card.version, &card.model_sha256, cutoffs, &card.features, &bundle.catalogue);
    Ok(LoadedModel { bundle: Arc::new(bundle), pool, cutoffs, policy: Arc::new(policy) })
}
