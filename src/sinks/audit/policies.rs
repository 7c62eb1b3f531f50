//! Decision policies by id: registered once per (model, cutoffs, catalogue), cached both ways.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::{PgConnection, Row};

use crate::domain::{Cutoffs, DecisionPolicy, PolicyReason};
use crate::sinks::SinkError;

/// Known policies: id by content, content by id.
#[derive(Default)]
pub struct Policies {
    known: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    ids: HashMap<PolicyKey, i16>,
    policies: HashMap<i16, Arc<DecisionPolicy>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PolicyKey(String, u64, u64, String);

fn key_of(policy: &DecisionPolicy) -> PolicyKey {
    PolicyKey(
        policy.model_sha256.clone(),
        policy.cutoffs.approve_below.to_bits(),
        policy.cutoffs.decline_at_or_above.to_bits(),
        policy.catalogue_version.clone(),
    )
}

impl Policies {
    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The id of `policy`, registering it on `connection` if the database does not know it yet.
    /// Within a transaction the id is remembered only by [`Policies::remember`] after commit.
    pub async fn id_of(&self, connection: &mut PgConnection, policy: &DecisionPolicy) -> Result<i16, SinkError> {
        if let Some(id) = self.lock().ids.get(&key_of(policy)) {
            return Ok(*id);
        }
        let (codes, features, texts): (Vec<&str>, Vec<&str>, Vec<&str>) = (
            policy.reasons.iter().map(|reason| reason.code.as_str()).collect(),
            policy.reasons.iter().map(|reason| reason.feature.as_str()).collect(),
            policy.reasons.iter().map(|reason| reason.text.as_str()).collect(),
        );
        let id: i16 = sqlx::query_scalar(
            "WITH new AS ( \
               INSERT INTO decision_policies (model_version, model_sha256, approve_below, decline_at_or_above, \
                 reason_catalogue_version, feature_names, reason_codes, reason_features, reason_texts) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING RETURNING policy_id) \
             SELECT policy_id FROM new UNION ALL \
             SELECT policy_id FROM decision_policies WHERE model_sha256 = $2 AND approve_below = $3 \
               AND decline_at_or_above = $4 AND reason_catalogue_version = $5 LIMIT 1",
        )
        .bind(&policy.model_version)
        .bind(&policy.model_sha256)
        .bind(policy.cutoffs.approve_below)
        .bind(policy.cutoffs.decline_at_or_above)
        .bind(&policy.catalogue_version)
        .bind(&policy.feature_names)
        .bind(&codes)
        .bind(&features)
        .bind(&texts)
        .fetch_one(&mut *connection)
        .await?;
        Ok(id)
    }

    /// Caches `id` for `policy` (after the transaction that registered it committed).
    pub fn remember(&self, id: i16, policy: &Arc<DecisionPolicy>) {
        let mut known = self.lock();
        known.ids.insert(key_of(policy), id);
        known.policies.insert(id, Arc::clone(policy));
    }

    /// The policy with `id`, read from the database the first time.
    pub async fn by_id(&self, connection: &mut PgConnection, id: i16) -> Result<Arc<DecisionPolicy>, SinkError> {
        if let Some(policy) = self.lock().policies.get(&id) {
            return Ok(Arc::clone(policy));
        }
        let row = sqlx::query(
            "SELECT model_version, model_sha256, approve_below, decline_at_or_above, reason_catalogue_version, \
             feature_names, reason_codes, reason_features, reason_texts FROM decision_policies WHERE policy_id = $1",
        )
        .bind(id)
        .fetch_one(&mut *connection)
        .await?;
        let (codes, features, texts): (Vec<String>, Vec<String>, Vec<String>) =
            (row.try_get(6)?, row.try_get(7)?, row.try_get(8)?);
        let policy = Arc::new(DecisionPolicy {
            model_version: row.try_get(0)?,
            model_sha256: row.try_get(1)?,
            cutoffs: Cutoffs { approve_below: row.try_get(2)?, decline_at_or_above: row.try_get(3)? },
            catalogue_version: row.try_get(4)?,
            feature_names: row.try_get(5)?,
            reasons: codes
                .into_iter()
                .zip(features)
                .zip(texts)
                .map(|((code, feature), text)| PolicyReason { code, feature, text })
                .collect(),
        });
        self.remember(id, &policy);
        Ok(policy)
    }
}
