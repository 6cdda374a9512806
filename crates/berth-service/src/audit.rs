//! The audit trail's write path: events go through a bounded channel to one task that writes
//! them in batches (one transaction per second or per [`BATCH`] events), so no request waits
//! on an audit write and a pull never costs a database write of its own.
//!
//! Pull events are offered with `try_send` and dropped (and counted) when the channel is full;
//! every other event waits for room, so pushes, deletes, logins and admin changes are never
//! dropped. Pulls are aggregated: one row per caller, source address, artifact and
//! `audit.pull_bucket` (a minute), with the number of pulls it stands for, written when its
//! bucket is over.
//! A benchmark pulling one image 170,000 times in five minutes writes five rows, not 170,000.
//! A crash can lose the last second's batch and the current minute's pull counts. The same task
//! removes events older than the retention once an hour.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_core::config::{AuditConfig, PullAudit};
use berth_meta::{AuditEvent, MetaStore, now_ms};
use tokio::sync::{mpsc, oneshot};

use crate::access::Actor;

/// Events queued at most.
const CAPACITY: usize = 10_000;
/// Events written per transaction at most.
const BATCH: usize = 500;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Distinct pull rows held at most before they are written early.
const MAX_PULL_ROWS: usize = 50_000;

enum Msg {
    Event(AuditEvent),
    Pull(AuditEvent),
    Flush(oneshot::Sender<()>),
}

/// The key a pull is counted under: caller, kind, source, artifact and minute.
type PullKey = (String, String, String, String, i64);

pub struct Auditor {
    tx: mpsc::Sender<Msg>,
    pulls: PullAudit,
    pub dropped: Arc<AtomicU64>,
    pub written: Arc<AtomicU64>,
}

/// Who did something, from where, as an event records it.
fn who(actor: &Actor) -> (String, &'static str, String) {
    (
        actor.principal.name().to_owned(),
        actor.principal.kind(),
        source(actor.source),
    )
}

fn source(s: Option<SocketAddr>) -> String {
    s.map(|s| s.ip().to_string()).unwrap_or_default()
}

impl Auditor {
    /// Starts the writer task on the current runtime.
    pub fn start(meta: MetaStore, config: &AuditConfig) -> Auditor {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let written = Arc::new(AtomicU64::new(0));
        tokio::spawn(writer(
            meta,
            rx,
            config.retention.0,
            config.pull_bucket.0,
            written.clone(),
        ));
        Auditor {
            tx,
            pulls: config.pulls,
            dropped: Arc::new(AtomicU64::new(0)),
            written,
        }
    }

    fn event(
        (name, kind, source): (String, &'static str, String),
        action: &str,
        resource: &str,
        ok: bool,
        detail: &str,
    ) -> AuditEvent {
        AuditEvent {
            id: 0,
            at: now_ms(),
            actor: clip(&name, 256),
            actor_kind: kind.to_owned(),
            action: action.to_owned(),
            resource: clip(resource, 512),
            source,
            result: if ok { "success" } else { "failure" }.to_owned(),
            detail: clip(detail, 1024),
            count: 1,
        }
    }

    async fn send(&self, e: AuditEvent) {
        let (action, resource) = (e.action.clone(), e.resource.clone());
        if self.tx.send(Msg::Event(e)).await.is_err() {
            tracing::error!(action, resource, "audit writer is gone; event lost");
        }
    }

    /// Records an event that must not be dropped (waits for room in the channel).
    pub async fn record(
        &self,
        actor: &Actor,
        action: &str,
        resource: &str,
        ok: bool,
        detail: &str,
    ) {
        self.send(Self::event(who(actor), action, resource, ok, detail))
            .await;
    }

    /// Records a failed login of `name` (who is nobody yet).
    pub async fn record_login_failure(&self, name: &str, from: Option<SocketAddr>, detail: &str) {
        let who = (name.to_owned(), "user", source(from));
        self.send(Self::event(who, "login", "registry", false, detail))
            .await;
    }

    /// Records a successful login (its credentials were checked now).
    pub async fn record_login(&self, actor: &Actor, detail: &str) {
        self.record(actor, "login", "registry", true, detail).await;
    }

    /// Records a pull, unless pulls are not audited; drops it when the channel is full.
    pub fn record_pull(&self, actor: &Actor, resource: &str) {
        if self.pulls == PullAudit::Off {
            return;
        }
        let e = Self::event(who(actor), "pull", resource, true, "");
        if self.tx.try_send(Msg::Pull(e)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until everything queued before this call is written, pull counts of the current
    /// minute included.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// At most `max` bytes of `s`, cut at a character boundary: fields can carry what a client
/// sent, and an event must stay small.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

async fn writer(
    meta: MetaStore,
    mut rx: mpsc::Receiver<Msg>,
    retention: Duration,
    pull_bucket: Duration,
    written: Arc<AtomicU64>,
) {
    let mut batch: Vec<AuditEvent> = Vec::with_capacity(BATCH);
    let mut pulls: HashMap<PullKey, AuditEvent> = HashMap::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut last_prune: Option<tokio::time::Instant> = None;
    let bucket_ms = (pull_bucket.as_millis() as i64).max(1);
    loop {
        // Wake at least once a second while pull counts wait for their minute to end.
        let (first, closed) = if pulls.is_empty() {
            let m = rx.recv().await;
            let closed = m.is_none();
            (m, closed)
        } else {
            match tokio::time::timeout(FLUSH_EVERY, rx.recv()).await {
                Ok(m) => {
                    let closed = m.is_none();
                    (m, closed)
                }
                Err(_) => (None, false),
            }
        };
        let mut flush_all = closed;
        if let Some(m) = first {
            let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
            let mut next = Some(m);
            while let Some(m) = next.take() {
                match m {
                    Msg::Event(e) => batch.push(e),
                    Msg::Pull(e) => {
                        let bucket = e.at - e.at.rem_euclid(bucket_ms);
                        let key = (
                            e.actor.clone(),
                            e.actor_kind.clone(),
                            e.source.clone(),
                            e.resource.clone(),
                            bucket,
                        );
                        pulls
                            .entry(key)
                            .and_modify(|row| row.count += 1)
                            .or_insert(AuditEvent { at: bucket, ..e });
                    }
                    Msg::Flush(done) => {
                        waiting.push(done);
                        flush_all = true;
                        break;
                    }
                }
                if batch.len() >= BATCH {
                    break;
                }
                next = match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(m)) => Some(m),
                    _ => None,
                };
            }
        }
        // Pull rows whose minute is over (all of them on a flush, at shutdown, or when too
        // many are held) join the batch.
        let now = now_ms();
        let all = flush_all || pulls.len() > MAX_PULL_ROWS;
        let done: Vec<PullKey> = pulls
            .keys()
            .filter(|k| all || k.4 + bucket_ms <= now)
            .cloned()
            .collect();
        for k in done {
            if let Some(row) = pulls.remove(&k) {
                batch.push(row);
            }
        }
        if !batch.is_empty() {
            // A failed write is retried with the next batch; the channel bounds the backlog.
            match meta.insert_audit(&batch).await {
                Ok(()) => {
                    written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                }
                Err(e) => {
                    tracing::error!(error = %e, events = batch.len(), "writing audit events failed");
                    if batch.len() > CAPACITY {
                        batch.clear();
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        for w in waiting.drain(..) {
            let _ = w.send(());
        }
        if !retention.is_zero() && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(tokio::time::Instant::now());
            let before = now_ms() - retention.as_millis() as i64;
            loop {
                match meta.prune_audit(before, 1000).await {
                    Ok(1000) => tokio::task::yield_now().await,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "pruning the audit log failed");
                        break;
                    }
                }
            }
        }
        if closed {
            return;
        }
    }
}
