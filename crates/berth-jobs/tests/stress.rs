//! GC under load: pushers sharing base layers, HEAD-then-skip pushers, deleters, tag movers
//! and back-to-back GC runs with a short grace period, all at once for a bounded time. Then:
//! every image acknowledged and not deleted pulls completely with correct digests; and after
//! everything is deleted and collected, the blob store holds nothing.
//!
//! With `TEST_METASTORE=postgres` three nodes share the database and the blob directory and
//! take the requests and GC runs in turn. `STRESS_SECONDS` sets the duration (default 4; run
//! larger on demand).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use berth_core::Digest;
use common::*;
use tokio::sync::Mutex;

/// An image some task owns and expects to pull at the end.
#[derive(Clone)]
struct Live {
    repo: String,
    tag: String,
    image: Image,
    /// Content of every blob, by digest, to verify the pull.
    contents: Vec<(Digest, Vec<u8>)>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn base_layers() -> Vec<Vec<u8>> {
    (0..3)
        .map(|i| format!("base-layer-{i}-").repeat(500).into_bytes())
        .collect()
}

/// Pushes an image from config + layers where `skip_if_present` layers are HEADed first and
/// only uploaded when missing (what docker and podman do for every layer).
async fn push(
    env: &Env,
    repo: &str,
    tag: &str,
    layers: Vec<Vec<u8>>,
    head_first: bool,
) -> Option<Live> {
    let mut contents = Vec::new();
    let mut layer_json = Vec::new();
    for l in &layers {
        let d = Digest::sha256_of(l);
        let present = head_first && env.has_blob(repo, &d).await;
        if !present {
            env.push_blob(repo, l).await;
        }
        layer_json.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": l.len()}));
        contents.push((d, l.clone()));
    }
    let config = format!("{{\"tag\":\"{repo}:{tag}\"}}").into_bytes();
    let cd = env.push_blob(repo, &config).await;
    contents.push((cd.clone(), config.clone()));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": layer_json,
    }))
    .unwrap();
    let r = env.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
    // A HEAD that answered 200 promised the layer: the manifest PUT must find it.
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{repo}:{tag}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let digest = Digest::sha256_of(&manifest);
    Some(Live {
        repo: repo.into(),
        tag: tag.into(),
        image: Image {
            digest,
            manifest,
            blobs: vec![],
        },
        contents,
    })
}

async fn verify(env: &Env, live: &Live) {
    let r = env
        .request(
            Method::GET,
            &format!("/v2/{}/manifests/{}", live.repo, live.tag),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}:{} lost", live.repo, live.tag);
    assert_eq!(
        Digest::sha256_of(&r.body),
        live.image.digest,
        "{}:{} changed",
        live.repo,
        live.tag
    );
    for (d, content) in &live.contents {
        let r = env
            .request(
                Method::GET,
                &format!("/v2/{}/blobs/{d}", live.repo),
                &[],
                vec![],
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "blob {d} of {}:{} lost",
            live.repo,
            live.tag
        );
        assert_eq!(
            &r.body, content,
            "blob {d} of {}:{} corrupted",
            live.repo, live.tag
        );
        assert_eq!(Digest::sha256_of(&r.body), *d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_under_concurrent_pushes_deletes_and_retags_loses_nothing() {
    let seconds: u64 = std::env::var("STRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    // On PostgreSQL three nodes share the database and the blobs, as `berth serve` processes
    // of a scale-out deployment do, and every request and GC run goes to the next node: the
    // row locks between nodes are what keeps this whole. (SQLite is one node by design.)
    let nodes = match std::env::var("TEST_METASTORE").as_deref() {
        Ok("postgres") => 3,
        _ => 1,
    };
    let env = Arc::new(Env::cluster(test_config(Duration::from_millis(300)), nodes).await);
    let live: Arc<Mutex<Vec<Live>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();

    // Pushers: shared base layers plus a unique one; half of them HEAD before uploading.
    for p in 0..4u64 {
        let (env, live, stop, counter) = (env.clone(), live.clone(), stop.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let repo = format!("stress/pusher{}", p % 2);
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let mut layers = base_layers();
                layers.truncate(1 + (n % 3) as usize);
                layers.push(format!("unique-{p}-{n}").into_bytes());
                if let Some(l) = push(&env, &repo, &format!("t{p}-{n}"), layers, p % 2 == 1).await {
                    live.lock().await.push(l);
                }
            }
        }));
    }
    // Re-tagger: keeps moving a few tags to new images (the old ones become collectable).
    {
        let (env, live, stop, counter) = (env.clone(), live.clone(), stop.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tag = format!("moving{}", round % 3);
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let mut layers = base_layers();
                layers.truncate(2);
                layers.push(format!("retag-{n}").into_bytes());
                if let Some(l) = push(&env, "stress/retag", &tag, layers, true).await {
                    let mut live = live.lock().await;
                    live.retain(|x| !(x.repo == "stress/retag" && x.tag == tag));
                    live.push(l);
                }
                round += 1;
            }
        }));
    }
    // Deleter: removes random images, by tag or by digest.
    {
        let (env, live, stop) = (env.clone(), live.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e3779b97f4a7c15);
            while !stop.load(Ordering::Relaxed) {
                let victim = {
                    let mut live = live.lock().await;
                    let candidates: Vec<usize> = (0..live.len())
                        .filter(|&i| live[i].repo.starts_with("stress/pusher"))
                        .collect();
                    if candidates.len() < 4 {
                        None
                    } else {
                        let i = candidates[(rng.next() as usize) % candidates.len()];
                        Some(live.swap_remove(i))
                    }
                };
                match victim {
                    Some(v) => {
                        let reference = if rng.next().is_multiple_of(2) {
                            v.tag.clone()
                        } else {
                            v.image.digest.to_string()
                        };
                        let r = env
                            .request(
                                Method::DELETE,
                                &format!("/v2/{}/manifests/{reference}", v.repo),
                                &[],
                                vec![],
                            )
                            .await;
                        assert_eq!(
                            r.status,
                            StatusCode::ACCEPTED,
                            "{}",
                            String::from_utf8_lossy(&r.body)
                        );
                    }
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    // Back-to-back GC runs.
    let gc_runs = Arc::new(AtomicU64::new(0));
    let freed = Arc::new(AtomicU64::new(0));
    {
        let (env, stop, gc_runs, freed) =
            (env.clone(), stop.clone(), gc_runs.clone(), freed.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let report = env.gc().await;
                freed.fetch_add(report.deleted_blobs, Ordering::Relaxed);
                gc_runs.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a stress task panicked");
    }
    // Let everything that was released age past the grace period, then collect again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    env.gc().await;

    let live = live.lock().await.clone();
    assert!(
        gc_runs.load(Ordering::Relaxed) >= 2,
        "GC ran only {} times",
        gc_runs.load(Ordering::Relaxed)
    );
    assert!(
        freed.load(Ordering::Relaxed) > 0,
        "GC never freed anything: the test did not exercise sweeps"
    );
    eprintln!(
        "stress: {} images pushed, {} alive, {} GC runs, {} blobs freed",
        counter.load(Ordering::Relaxed),
        live.len(),
        gc_runs.load(Ordering::Relaxed),
        freed.load(Ordering::Relaxed)
    );
    for l in &live {
        verify(&env, l).await;
    }

    // Delete everything that is left and collect: storage returns to empty.
    for l in &live {
        let r = env
            .request(
                Method::DELETE,
                &format!("/v2/{}/manifests/{}", l.repo, l.image.digest),
                &[],
                vec![],
            )
            .await;
        assert!(
            r.status == StatusCode::ACCEPTED || r.status == StatusCode::NOT_FOUND,
            "{:?}",
            r.status
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    env.gc().await;
    // What is left, with the database rows of its digest, says which step leaked it.
    let mut left = Vec::new();
    for f in env.blob_files() {
        let parts: Vec<String> = f.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let n = parts.len();
        let digest = format!("{}:{}", parts[n - 4], parts[n - 2]);
        let queued = env
            .meta
            .blob_review_queued_for_tests(&digest)
            .await
            .unwrap();
        left.push((
            f.clone(),
            format!(
                "rows {:?}, queued for review: {queued}",
                env.meta.blob_generations(&digest).await.unwrap()
            ),
        ));
    }
    assert!(left.is_empty(), "bytes left behind: {left:?}");
    let usage = env.meta.storage_usage().await.unwrap();
    assert_eq!((usage.blob_count, usage.stored_bytes), (0, 0), "{usage:?}");
}
