//! The shape of background work: a [`Worker`] has a name, a status, and does one unit of work
//! at a time, saying whether more is waiting; [`run_worker`] calls it until the stop signal,
//! sleeping while it is idle. The job runner is one; the scanner, retention and replication
//! workers of later features plug in the same way, and all of them stop between two units.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What a worker is doing, for the API and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerStatus {
    Idle,
    Busy(String),
}

/// What one unit of work left behind.
pub enum Tick {
    /// More is waiting: call again at once.
    Busy,
    /// Nothing to do: call again after `at_most`, or as soon as `wake` is notified.
    Idle {
        at_most: Duration,
        wake: Option<Arc<Notify>>,
    },
}

/// Background work that runs until it is told to stop.
#[async_trait::async_trait]
pub trait Worker: Send {
    fn name(&self) -> &str;

    fn status(&self) -> WorkerStatus;

    /// One unit of work. It checks `stop` where it can stop early (a GC run stops between two
    /// items and keeps its progress).
    async fn work(&mut self, stop: &CancellationToken) -> Tick;

    /// Called once after the stop signal, to give up what the worker holds (leases).
    async fn stopped(&mut self) {}
}

/// Calls `worker` until `stop` is cancelled.
pub async fn run_worker<W: Worker>(mut worker: W, stop: CancellationToken) {
    tracing::debug!(worker = worker.name(), "worker started");
    while !stop.is_cancelled() {
        match worker.work(&stop).await {
            Tick::Busy => tokio::task::yield_now().await,
            Tick::Idle { at_most, wake } => {
                let woken = async {
                    match &wake {
                        Some(w) => w.notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(at_most) => {}
                    () = woken => {}
                    () = stop.cancelled() => {}
                }
            }
        }
    }
    worker.stopped().await;
    tracing::debug!(worker = worker.name(), "worker stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter {
        left: u32,
        done: u32,
    }

    #[async_trait::async_trait]
    impl Worker for Counter {
        fn name(&self) -> &str {
            "counter"
        }

        fn status(&self) -> WorkerStatus {
            if self.left > 0 {
                WorkerStatus::Busy(format!("{} left", self.left))
            } else {
                WorkerStatus::Idle
            }
        }

        async fn work(&mut self, stop: &CancellationToken) -> Tick {
            if self.left == 0 {
                stop.cancel();
                return Tick::Idle {
                    at_most: Duration::from_secs(3600),
                    wake: None,
                };
            }
            self.left -= 1;
            self.done += 1;
            Tick::Busy
        }
    }

    #[tokio::test]
    async fn a_worker_runs_until_stopped() {
        let stop = CancellationToken::new();
        let w = Counter { left: 5, done: 0 };
        assert_eq!(w.status(), WorkerStatus::Busy("5 left".into()));
        // The worker stops itself once its work is done; run_worker returns at once then.
        tokio::time::timeout(Duration::from_secs(5), run_worker(w, stop.clone()))
            .await
            .expect("the worker stops");
        assert!(stop.is_cancelled());
    }
}
