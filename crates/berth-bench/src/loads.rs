//! The loads more than one scenario measures: small blobs pushed or pulled by a pool of
//! workers, manifests PUT then GET one at a time, and one manifest GET by tag from many
//! connections. Each runs against a registry of one node or of several; with several, every
//! client spreads its requests over the nodes round-robin ([`RoundRobin`]), as a load balancer
//! in front of them would.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::data::Blob;
use crate::http::{Endpoint, RoundRobin};
use crate::ops::{self, Monolithic};
use crate::stats::Tally;

/// Runs `conc` workers made by `f` (each gets its index) and merges what they measured.
pub async fn workers<F, Fut>(conc: usize, f: F) -> Tally
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Tally> + Send + 'static,
{
    let handles: Vec<_> = (0..conc).map(|w| tokio::spawn(f(w))).collect();
    let mut all = Tally::default();
    for h in handles {
        match h.await {
            Ok(t) => all.merge(t),
            Err(e) => all.fail(format!("worker failed: {e}")),
        }
    }
    all
}

/// Every blob of `blobs` pushed monolithically into `repo` (or, with `pulling`, pulled from it
/// and digest-verified) by `conc` workers, each taking the next blob in turn. Returns what they
/// measured and the seconds from the first request to the last answer.
pub async fn small_blobs(
    nodes: &[Arc<Endpoint>],
    mode: Monolithic,
    repo: &Arc<String>,
    blobs: &Arc<Vec<Blob>>,
    conc: usize,
    pulling: bool,
) -> (Tally, f64) {
    let nodes: Arc<[Arc<Endpoint>]> = nodes.into();
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let tally = workers(conc, |w| {
        let (nodes, blobs, next, repo) = (nodes.clone(), blobs.clone(), next.clone(), repo.clone());
        async move {
            let mut t = Tally::default();
            let mut rr = RoundRobin::new(&nodes, w, Duration::from_secs(30));
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(b) = blobs.get(i) else { break };
                let conn = rr.turn();
                let s = Instant::now();
                let r = if pulling {
                    let path = format!("/v2/{repo}/blobs/{}", b.digest);
                    ops::pull_blob(conn, &path, b.len(), &b.digest, true)
                        .await
                        .map(|_| ())
                } else {
                    ops::push_monolithic(conn, mode, &repo, b).await
                };
                match r {
                    Ok(()) => t.ok(s),
                    Err(e) => t.fail(format!("{e:#}")),
                }
            }
            t
        }
    })
    .await;
    (tally, t.elapsed().as_secs_f64())
}

/// What [`manifests_one_at_a_time`] measured: the PUTs and the GETs, each with its seconds.
pub struct PutThenGet {
    pub put: Tally,
    pub put_secs: f64,
    pub get: Tally,
    pub get_secs: f64,
}

/// Each of `bodies` PUT into `repo` under the tag `{tag_prefix}{k}`, one at a time, then each
/// GET by digest, one at a time (the size of every answer checked). With several nodes, the
/// GET of a manifest mostly goes to another node than its PUT did.
pub async fn manifests_one_at_a_time(
    nodes: &[Arc<Endpoint>],
    repo: &str,
    tag_prefix: &str,
    bodies: &[Bytes],
) -> PutThenGet {
    let mut rr = RoundRobin::new(nodes, 0, Duration::from_secs(60));
    let mut put = Tally::default();
    let t = Instant::now();
    for (k, b) in bodies.iter().enumerate() {
        let s = Instant::now();
        match ops::put_manifest(rr.turn(), repo, &format!("{tag_prefix}{k}"), b).await {
            Ok(()) => put.ok(s),
            Err(e) => put.fail(format!("{e:#}")),
        }
    }
    let put_secs = t.elapsed().as_secs_f64();
    let mut get = Tally::default();
    let t = Instant::now();
    for b in bodies {
        let path = format!("/v2/{repo}/manifests/{}", crate::data::sha256_hex(b));
        let s = Instant::now();
        match ops::get_manifest(rr.turn(), &path, b.len()).await {
            Ok(()) => get.ok(s),
            Err(e) => get.fail(format!("{e:#}")),
        }
    }
    PutThenGet {
        put,
        put_secs,
        get,
        get_secs: t.elapsed().as_secs_f64(),
    }
}

/// GETs of `path` (an answer of `len` bytes) from `conc` keep-alive clients, each as fast as
/// it can, until `duration` has passed. Returns what they measured and the seconds it took.
pub async fn hot_get(
    nodes: &[Arc<Endpoint>],
    path: &str,
    len: usize,
    conc: usize,
    duration: Duration,
) -> (Tally, f64) {
    let nodes: Arc<[Arc<Endpoint>]> = nodes.into();
    let path: Arc<str> = path.into();
    let deadline = Instant::now() + duration;
    let t = Instant::now();
    let tally = workers(conc, |w| {
        let (nodes, path) = (nodes.clone(), path.clone());
        async move {
            let mut t = Tally::default();
            let mut rr = RoundRobin::new(&nodes, w, Duration::from_secs(10));
            while Instant::now() < deadline {
                let s = Instant::now();
                match ops::get_manifest(rr.turn(), &path, len).await {
                    Ok(()) => t.ok(s),
                    Err(e) => t.fail(format!("{e:#}")),
                }
            }
            t
        }
    })
    .await;
    (tally, t.elapsed().as_secs_f64())
}
