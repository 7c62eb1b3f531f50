//! Background tasks beside the pipeline: readiness probes while idle, and keeping the monitors
//! to this replica's partitions.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use schema_registry_converter::async_impl::schema_registry::SrSettings;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::retry::RetryPolicy;
use super::AppError;
use crate::codec::registry_reachable;
use crate::monitor::Monitoring;
use crate::sinks::AuditStore;
use crate::sources::{Assignment, PartitionEvent};
use crate::telemetry::Readiness;

/// Keeps `/ready` true to the dependencies while idle: pings PostgreSQL and the schema registry
/// every 5 s (batches also update the flags as they succeed or fail).
pub async fn probe_dependencies(
    audit: AuditStore,
    registry: SrSettings,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        readiness.database_ok.store(audit.ping().await, Ordering::Release);
        readiness.schema_registry_ok.store(registry_reachable(&registry).await, Ordering::Release);
    }
}

/// Claims newly assigned partitions, in the order the assignments came: reads each one's
/// audited-through offset and restores its monitor windows from the persisted counts, then lets
/// the intake decide its records. Revoked partitions are forgotten by the monitors. Retried
/// while the database is down (the intake waits meanwhile). Ends on shutdown (the consumer may
/// outlive it, closing) or when the consumer is gone.
pub async fn follow_partitions(
    assignment: Arc<Assignment>,
    monitoring: Arc<Monitoring>,
    audit: AuditStore,
    topic: String,
    mut events: UnboundedReceiver<PartitionEvent>,
    retry: RetryPolicy,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        match event {
            PartitionEvent::Revoked { partitions } => monitoring.forget_partitions(&partitions),
            PartitionEvent::Assigned { partitions, .. } => {
                let numbers: Vec<i32> = partitions.iter().map(|(partition, _)| *partition).collect();
                let started = std::time::Instant::now();
                let claim = || async {
                    let through = audit.progress(&topic, &numbers).await?;
                    monitoring.forget_partitions(&numbers);
                    let buckets = monitoring.rebuild(audit.pool(), &topic, &numbers).await?;
                    Ok::<_, AppError>((through, buckets))
                };
                let on_retry = |error: &AppError, _| warn!(%error, "claiming assigned partitions failed; retrying");
                match retry.run(&shutdown, claim, on_retry).await {
                    Ok((through, buckets)) => {
                        let epochs: std::collections::HashMap<i32, u64> = partitions.iter().copied().collect();
                        for (partition, audited_through, announced_through) in &through {
                            if let Some(epoch) = epochs.get(partition) {
                                assignment.claimed(*partition, *epoch, *audited_through, *announced_through);
                            }
                        }
                        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
                        info!(
                            ?through,
                            buckets, elapsed_ms, "partitions claimed; monitor windows restored from persisted counts"
                        );
                    }
                    Err(error) => warn!(%error, ?numbers, "partitions not claimed"),
                }
            }
        }
    }
}
