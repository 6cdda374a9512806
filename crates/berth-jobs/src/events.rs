//! The events worker: hands the events outbox (berth-meta's `events` table) on to each
//! [`EventSink`], in order, at least once, and purges events every sink has passed once they
//! are older than `events.retention`.
//!
//! Each sink is a consumer with a position in the stream and a lease: one node at a time
//! hands a sink its events, and another node takes over when the lease runs out (a node that
//! died) or is released (a node that stopped). A sink that fails is retried from the same
//! position after a wait that doubles from `events.poll_interval` up to a minute, so it sees every event, in order; it may see an event twice if a node
//! dies between handing it on and recording that it did. Webhooks and event-triggered
//! replication are sinks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::config::EventsConfig;
use berth_meta::{Event, MetaStore, now_ms};
use tokio_util::sync::CancellationToken;

use crate::{Tick, Worker, WorkerStatus};

/// Where events go. `deliver` gets a batch in stream order and succeeds only when every
/// event of it was handed on; on an error the whole batch comes again.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync {
    /// Unique and stable: the consumer's position is stored under it.
    fn name(&self) -> &str;

    async fn deliver(&self, events: &[Event]) -> Result<(), String>;
}

/// Events purged at most per round.
const PURGE_BATCH: u32 = 1000;
/// How often old events are purged (at once again while there are more).
const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// The longest wait before a failed sink is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

struct Consumer {
    sink: Arc<dyn EventSink>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// Runs the sinks of this node (the [`Worker`] of the events outbox).
pub struct EventWorker {
    meta: MetaStore,
    config: EventsConfig,
    owner: String,
    consumers: Vec<Consumer>,
    next_purge: Instant,
    status: WorkerStatus,
}

impl EventWorker {
    pub fn new(meta: MetaStore, config: EventsConfig, sinks: Vec<Arc<dyn EventSink>>) -> Self {
        EventWorker {
            meta,
            config,
            owner: crate::worker_name(),
            consumers: sinks
                .into_iter()
                .map(|sink| Consumer {
                    sink,
                    failures: 0,
                    retry_at: None,
                })
                .collect(),
            next_purge: Instant::now(),
            status: WorkerStatus::Idle,
        }
    }

    /// Gives up this node's leases, so another node goes on at once (at shutdown).
    async fn release(&self) {
        for c in &self.consumers {
            if let Err(e) = self
                .meta
                .release_event_consumer(c.sink.name(), &self.owner)
                .await
            {
                tracing::warn!(sink = c.sink.name(), error = %e, "releasing an event consumer");
            }
        }
    }

    /// Hands one batch to the sink at `i`: `Ok(true)` when the batch was full (more may
    /// wait), `Ok(false)` when it is caught up, held by another node or waiting to retry.
    async fn deliver_one(&mut self, i: usize) -> Result<bool, berth_meta::MetaError> {
        let lease = self.config.lease.0.as_millis() as i64;
        let batch = self.config.batch.max(1);
        let poll = self.config.poll_interval.0;
        let c = &mut self.consumers[i];
        if c.retry_at.is_some_and(|t| Instant::now() < t) {
            return Ok(false);
        }
        let name = c.sink.name().to_owned();
        let Some(position) = self
            .meta
            .claim_event_consumer(&name, &self.owner, lease)
            .await?
        else {
            return Ok(false);
        };
        let events = self.meta.events_after(position, batch).await?;
        let Some(last) = events.last().map(Event::position) else {
            return Ok(false);
        };
        // Given up at half the lease: the lease is not renewed while a sink works, and no
        // other node may take the consumer over while this one still hands events on.
        let delivered = tokio::time::timeout(self.config.lease.0 / 2, c.sink.deliver(&events))
            .await
            .unwrap_or_else(|_| Err("no answer within half of events.lease".into()));
        match delivered {
            Ok(()) => {
                c.failures = 0;
                c.retry_at = None;
                if !self
                    .meta
                    .advance_event_consumer(&name, &self.owner, last)
                    .await?
                {
                    tracing::warn!(sink = %name, "another node took this event consumer over");
                    return Ok(false);
                }
                Ok(events.len() as u32 == batch)
            }
            Err(e) => {
                c.failures += 1;
                let wait = poll
                    .saturating_mul(1 << c.failures.min(10))
                    .min(MAX_BACKOFF);
                c.retry_at = Some(Instant::now() + wait);
                tracing::warn!(
                    sink = %name,
                    events = events.len(),
                    failures = c.failures,
                    retry_in_ms = wait.as_millis() as u64,
                    error = %e,
                    "handing events on failed; the same events are tried again"
                );
                Ok(false)
            }
        }
    }

    async fn purge(&mut self) {
        if Instant::now() < self.next_purge {
            return;
        }
        self.next_purge = Instant::now() + PURGE_INTERVAL;
        let before = now_ms() - self.config.retention.0.as_millis() as i64;
        match self.meta.purge_events(before, PURGE_BATCH).await {
            Ok(n) if n == u64::from(PURGE_BATCH) => self.next_purge = Instant::now(),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purging old events failed"),
        }
    }
}

#[async_trait::async_trait]
impl Worker for EventWorker {
    fn name(&self) -> &str {
        "events"
    }

    fn status(&self) -> WorkerStatus {
        self.status.clone()
    }

    /// One batch to each sink that has events; idle for `events.poll_interval` when every
    /// sink is caught up.
    async fn work(&mut self, stop: &CancellationToken) -> Tick {
        let mut more = false;
        for i in 0..self.consumers.len() {
            if stop.is_cancelled() {
                break;
            }
            match self.deliver_one(i).await {
                Ok(m) => more |= m,
                Err(e) => tracing::warn!(
                    sink = self.consumers[i].sink.name(),
                    error = %e,
                    "reading events failed"
                ),
            }
        }
        self.purge().await;
        if more && !stop.is_cancelled() {
            self.status = WorkerStatus::Busy("handing events on".into());
            Tick::Busy
        } else {
            self.status = WorkerStatus::Idle;
            Tick::Idle {
                at_most: self.config.poll_interval.0,
                wake: None,
            }
        }
    }

    async fn stopped(&mut self) {
        self.release().await;
    }
}
