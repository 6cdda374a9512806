//! The rules of garbage collection, each checked through what the registry serves over the
//! API and through the files under `blobs/`: shared layers, the untagged policy, re-tags, the
//! grace period and HEAD-then-skip, referrers, cosign tags, index children, dry runs, upload
//! purging, scrub, unfinished sweeps, storage accounting and the job runner.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::{Method, StatusCode, header};
use berth_core::Digest;
use berth_core::config::UntaggedPolicy;
use berth_jobs::{GcOptions, JobRunner};
use berth_meta::{BlobReview, GcPolicy, JobState, now_ms};
use common::*;
use tokio_util::sync::CancellationToken;

// ---- helpers ----

async fn delete(env: &Env, repo: &str, reference: &str) -> Response {
    env.request(
        Method::DELETE,
        &format!("/v2/{repo}/manifests/{reference}"),
        &[],
        vec![],
    )
    .await
}

/// Pulls `reference` and every blob of `img`: the manifest is the exact bytes pushed and every
/// blob hashes to its digest.
async fn assert_pulls(env: &Env, repo: &str, reference: &str, img: &Image) {
    let r = env
        .request(
            Method::GET,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[(header::ACCEPT.as_str(), OCI_MANIFEST)],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "manifest {repo}:{reference}");
    assert_eq!(r.body, img.manifest, "manifest bytes of {repo}:{reference}");
    for d in &img.blobs {
        let r = env
            .request(Method::GET, &format!("/v2/{repo}/blobs/{d}"), &[], vec![])
            .await;
        assert_eq!(r.status, StatusCode::OK, "blob {d} of {repo}:{reference}");
        assert_eq!(Digest::sha256_of(&r.body), *d, "bytes of blob {d}");
    }
}

fn stored(env: &Env, d: &Digest) -> bool {
    env.blob_path(d).is_some()
}

fn file_len(env: &Env, d: &Digest) -> u64 {
    std::fs::metadata(env.blob_path(d).expect("blob file"))
        .expect("metadata")
        .len()
}

async fn manifest_status(env: &Env, repo: &str, reference: &str) -> StatusCode {
    env.status(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
        .await
}

async fn blob_status(env: &Env, method: Method, repo: &str, d: &Digest) -> StatusCode {
    env.status(method, &format!("/v2/{repo}/blobs/{d}")).await
}

async fn tags(env: &Env, repo: &str) -> Vec<String> {
    let r = env
        .request(Method::GET, &format!("/v2/{repo}/tags/list"), &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("tags json");
    v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Digests listed by the referrers API for `subject`.
async fn referrers(env: &Env, repo: &str, subject: &Digest) -> Vec<String> {
    let r = env
        .request(
            Method::GET,
            &format!("/v2/{repo}/referrers/{subject}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("referrers json");
    v["manifests"]
        .as_array()
        .expect("manifests array")
        .iter()
        .map(|m| m["digest"].as_str().expect("digest").to_owned())
        .collect()
}

/// An image manifest over blobs given as (digest, size), config first.
fn image_manifest(blobs: &[(Digest, usize)], subject: Option<&Image>) -> Vec<u8> {
    let (config, layers) = blobs.split_first().expect("a config");
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0.to_string(), "size": config.1},
        "layers": layers.iter().map(|(d, n)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": n
        })).collect::<Vec<_>>(),
    });
    if let Some(s) = subject {
        m["subject"] = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": s.digest.to_string(), "size": s.manifest.len()});
    }
    serde_json::to_vec(&m).expect("json")
}

/// Pushes the blobs (config first) and returns the image that references them, without
/// pushing its manifest.
async fn prepare_image(env: &Env, repo: &str, blobs: &[&[u8]]) -> Image {
    let mut described = Vec::new();
    for b in blobs {
        described.push((env.push_blob(repo, b).await, b.len()));
    }
    let manifest = image_manifest(&described, None);
    Image {
        digest: Digest::sha256_of(&manifest),
        manifest,
        blobs: described.into_iter().map(|(d, _)| d).collect(),
    }
}

async fn put_image(env: &Env, repo: &str, reference: &str, img: &Image) {
    let r = env
        .put_manifest(repo, reference, OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

fn set_old_mtime(path: &PathBuf, age: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_modified(SystemTime::now() - age)
        .expect("set mtime");
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

// ---- 1. shared layers ----

#[tokio::test]
async fn a_shared_layer_survives_while_the_unshared_blobs_go() {
    let env = Env::new(test_config(Duration::ZERO)).await;
    let a = env
        .push_image("team/app", Some("a"), &[b"shared layer", b"only in a"])
        .await;
    let b = env
        .push_image("team/app", Some("b"), &[b"shared layer", b"only in b"])
        .await;
    // The same layer in another repository, referenced there.
    let c = env
        .push_image("team/other", Some("c"), &[b"shared layer", b"only in c"])
        .await;
    assert_eq!(a.blobs[1], b.blobs[1]);
    assert_eq!(env.blob_files().len(), 7, "one file per distinct blob");

    let freed_a = file_len(&env, &a.blobs[0]) + file_len(&env, &a.blobs[2]);
    assert_eq!(
        delete(&env, "team/app", "a").await.status,
        StatusCode::ACCEPTED
    );
    let report = env.gc().await;
    assert_eq!(report.deleted_manifests, 1, "{report:?}");
    assert_eq!(
        report.deleted_blobs, 2,
        "config and unshared layer of a: {report:?}"
    );
    assert_eq!(report.bytes_freed, freed_a, "{report:?}");
    assert!(!stored(&env, &a.blobs[0]), "config of a still stored");
    assert!(
        !stored(&env, &a.blobs[2]),
        "unshared layer of a still stored"
    );
    assert!(stored(&env, &a.blobs[1]), "the shared layer was deleted");
    assert_eq!(env.blob_files().len(), 5);
    assert_eq!(
        manifest_status(&env, "team/app", &a.digest.to_string()).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        blob_status(&env, Method::GET, "team/app", &a.blobs[2]).await,
        StatusCode::NOT_FOUND
    );
    assert_pulls(&env, "team/app", "b", &b).await;
    assert_pulls(&env, "team/other", "c", &c).await;

    // Now b goes too: the layer is still referenced from the other repository.
    assert_eq!(
        delete(&env, "team/app", "b").await.status,
        StatusCode::ACCEPTED
    );
    let report = env.gc().await;
    assert_eq!(report.deleted_manifests, 1, "{report:?}");
    assert_eq!(report.deleted_blobs, 2, "{report:?}");
    assert!(stored(&env, &b.blobs[1]));
    assert_eq!(env.blob_files().len(), 3);
    assert_pulls(&env, "team/other", "c", &c).await;
    // The repository whose manifests no longer use the layer lost its link (older than the
    // grace period): it does not serve another repository's blob.
    assert_eq!(
        blob_status(&env, Method::HEAD, "team/app", &b.blobs[1]).await,
        StatusCode::NOT_FOUND
    );

    // And with c gone nothing is left.
    assert_eq!(
        delete(&env, "team/other", "c").await.status,
        StatusCode::ACCEPTED
    );
    let report = env.gc().await;
    assert_eq!(report.deleted_blobs, 3, "{report:?}");
    assert!(env.blob_files().is_empty(), "{:?}", env.blob_files());
}

// ---- 2. the untagged policy ----

#[tokio::test]
async fn untagged_manifests_are_kept_with_the_keep_policy() {
    let mut config = test_config(Duration::ZERO);
    config.gc.untagged = UntaggedPolicy::Keep;
    let env = Env::new(config).await;
    let img = env
        .push_image("team/app", Some("v1"), &[b"kept layer"])
        .await;
    assert_eq!(
        delete(&env, "team/app", "v1").await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        manifest_status(&env, "team/app", "v1").await,
        StatusCode::NOT_FOUND
    );

    let report = env.gc().await;
    assert_eq!(report.deleted_manifests, 0, "{report:?}");
    assert_eq!(report.deleted_blobs, 0, "{report:?}");
    assert_eq!(env.blob_files().len(), 2);
    assert_pulls(&env, "team/app", &img.digest.to_string(), &img).await;

    // "keep" does not stop a delete by digest.
    assert_eq!(
        delete(&env, "team/app", &img.digest.to_string())
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let report = env.gc().await;
    assert_eq!(report.deleted_blobs, 2, "{report:?}");
    assert!(env.blob_files().is_empty());
}

#[tokio::test]
async fn untagged_manifests_are_collected_at_once_with_age_zero() {
    let env = Env::new(test_config(Duration::ZERO)).await;
    let img = env
        .push_image("team/app", Some("v1"), &[b"doomed layer"])
        .await;
    // An image pushed by digest only is untagged from the start.
    let by_digest = env
        .push_image("team/app", None, &[b"never tagged layer"])
        .await;
    assert_eq!(
        delete(&env, "team/app", "v1").await.status,
        StatusCode::ACCEPTED
    );
    let report = env.gc().await;
    assert_eq!(report.deleted_manifests, 2, "{report:?}");
    assert_eq!(report.deleted_blobs, 4, "{report:?}");
    assert!(env.blob_files().is_empty(), "{:?}", env.blob_files());
    for d in [&img.digest, &by_digest.digest] {
        assert_eq!(
            manifest_status(&env, "team/app", &d.to_string()).await,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        blob_status(&env, Method::GET, "team/app", &img.blobs[1]).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn untagged_manifests_are_collected_after_their_age() {
    let mut config = test_config(Duration::ZERO);
    config.gc.untagged_age.0 = Duration::from_millis(300);
    let env = Env::new(config).await;
    let img = env
        .push_image("team/app", Some("v1"), &[b"aging layer"])
        .await;
    // Untagged, then tagged again within the age: the clock starts over (it is tagged).
    let back = env
        .push_image("team/app", Some("x"), &[b"re-tagged layer"])
        .await;
    assert_eq!(
        delete(&env, "team/app", "v1").await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        delete(&env, "team/app", "x").await.status,
        StatusCode::ACCEPTED
    );

    let report = env.gc().await;
    assert_eq!(report.deleted_manifests, 0, "too young: {report:?}");
    assert_eq!(report.deleted_blobs, 0, "{report:?}");
    assert_pulls(&env, "team/app", &img.digest.to_string(), &img).await;
    put_image(&env, "team/app", "y", &back).await;

    sleep_ms(400).await;
    let report = env.gc().await;
    assert_eq!(report.deleted_manifests, 1, "{report:?}");
    assert_eq!(report.deleted_blobs, 2, "{report:?}");
    assert_eq!(
        manifest_status(&env, "team/app", &img.digest.to_string()).await,
        StatusCode::NOT_FOUND
    );
    for d in &img.blobs {
        assert!(!stored(&env, d), "{d} still stored");
    }
    assert_pulls(&env, "team/app", "y", &back).await;
    assert_eq!(env.blob_files().len(), 2);
}

// ---- 3. re-tags ----

#[tokio::test]
async fn moving_a_tag_makes_the_old_image_collectable() {
    let env = Env::new(test_config(Duration::ZERO)).await;
    let old = env
        .push_image("team/app", Some("latest"), &[b"base", b"old top"])
        .await;
    let new = env
        .push_image("team/app", Some("latest"), &[b"base", b"new top"])
        .await;
    assert_ne!(old.digest, new.digest);
    assert_pulls(&env, "team/app", "latest", &new).await;
    let freed = file_len(&env, &old.blobs[0]) + file_len(&env, &old.blobs[2]);

    let report = env.gc().await;
    assert_eq!(report.deleted_manifests, 1, "{report:?}");
    assert_eq!(report.deleted_blobs, 2, "{report:?}");
    assert_eq!(report.bytes_freed, freed, "{report:?}");
    assert_eq!(
        manifest_status(&env, "team/app", &old.digest.to_string()).await,
        StatusCode::NOT_FOUND
    );
    assert!(!stored(&env, &old.blobs[0]));
    assert!(!stored(&env, &old.blobs[2]));
    assert_eq!(env.blob_files().len(), 3);
    assert_pulls(&env, "team/app", "latest", &new).await;
    assert_pulls(&env, "team/app", &new.digest.to_string(), &new).await;
    assert_eq!(tags(&env, "team/app").await, vec!["latest".to_owned()]);

    // A second run has nothing left to do.
    let report = env.gc().await;
    assert_eq!(
        report.deleted_manifests + report.deleted_blobs,
        0,
        "{report:?}"
    );
}

// ---- 4. the grace period ----

#[tokio::test]
async fn an_unreferenced_blob_lives_through_the_grace_period() {
    let env = Env::new(test_config(Duration::from_millis(300))).await;
    let bytes = b"pushed, never referenced";
    let d = env.push_blob("team/app", bytes).await;
    let report = env.gc().await;
    assert_eq!(report.deleted_blobs, 0, "{report:?}");
    assert!(stored(&env, &d));

    sleep_ms(400).await;
    let report = env.gc().await;
    assert_eq!(report.deleted_blobs, 1, "{report:?}");
    assert_eq!(report.bytes_freed, bytes.len() as u64, "{report:?}");
    assert!(!stored(&env, &d));
    assert!(env.blob_files().is_empty());
    assert_eq!(
        blob_status(&env, Method::HEAD, "team/app", &d).await,
        StatusCode::NOT_FOUND
    );

    // A run with a zero grace period override takes a fresh one at once.
    let fresh = env.push_blob("team/app", b"fresh and unreferenced").await;
    let report = env
        .gc_with(GcOptions {
            grace_period: Some(Duration::ZERO),
            ..GcOptions::default()
        })
        .await;
    assert_eq!(report.deleted_blobs, 1, "{report:?}");
    assert!(!stored(&env, &fresh));
    assert_eq!(
        blob_status(&env, Method::GET, "team/app", &fresh).await,
        StatusCode::NOT_FOUND
    );
    assert!(env.blob_files().is_empty());
}

/// `berth gc --grace-period 0s` after a scheduled run: the scheduled run deferred the blob
/// to the end of the configured grace period, and the override must still take it now.
#[tokio::test]
async fn a_grace_override_applies_to_blobs_an_earlier_run_deferred() {
    let env = Env::new(test_config(Duration::from_secs(3600))).await;
    let d = env
        .push_blob("team/app", b"deferred by the scheduled run")
        .await;
    let report = env.gc().await;
    assert_eq!(report.reviewed_blobs, 1, "{report:?}");
    assert_eq!(report.deleted_blobs, 0, "{report:?}");
    assert!(stored(&env, &d));

    let report = env
        .gc_with(GcOptions {
            grace_period: Some(Duration::ZERO),
            ..GcOptions::default()
        })
        .await;
    assert_eq!(
        report.deleted_blobs, 1,
        "the override run did not review the deferred blob: {report:?}"
    );
    assert!(!stored(&env, &d));
}

/// The occasional full audit: what an earlier run decided to keep under another policy is
/// reviewed again (here: untagged manifests kept by "keep", then the policy became "delete").
#[tokio::test]
async fn a_full_run_reviews_everything_again() {
    let mut config = test_config(Duration::ZERO);
    config.gc.untagged = UntaggedPolicy::Keep;
    let env = Env::new(config).await;
    let img = env
        .push_image("team/app", Some("v1"), &[b"kept, then not"])
        .await;
    let tagged = env
        .push_image("team/app", Some("stays"), &[b"tagged all along"])
        .await;
    assert_eq!(
        delete(&env, "team/app", "v1").await.status,
        StatusCode::ACCEPTED
    );
    let report = env.gc().await;
    assert_eq!(report.deleted_manifests, 0, "{report:?}");

    // The node restarts with "delete".
    let mut config = (*env.config).clone();
    config.gc.untagged = UntaggedPolicy::Delete;
    let report = berth_jobs::run_gc(
        &env.meta,
        env.blobs.as_ref(),
        &config,
        &GcOptions {
            full: true,
            ..GcOptions::default()
        },
        &CancellationToken::new(),
    )
    .await
    .expect("a full run");
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.deleted_manifests, 1, "{report:?}");
    assert_eq!(report.deleted_blobs, 2, "{report:?}");
    assert_eq!(
        manifest_status(&env, "team/app", &img.digest.to_string()).await,
        StatusCode::NOT_FOUND
    );
    assert_pulls(&env, "team/app", "stays", &tagged).await;
    assert_eq!(env.blob_files().len(), 2);
}

// ---- 5. HEAD, 200, skip ----

#[tokio::test]
async fn a_blob_seen_by_head_outlives_its_original_grace() {
    const GRACE: i64 = 600;
    let env = Env::new(test_config(Duration::from_millis(GRACE as u64))).await;
    let layer_bytes = b"a layer the client will skip";
    let layer = env.push_blob("team/app", layer_bytes).await;
    let untouched = env
        .push_blob("team/app", b"a layer nobody asks about")
        .await;
    let pushed = now_ms();

    // Past half the grace period a HEAD touches the blob.
    sleep_ms(GRACE as u64 / 2 + 80).await;
    let head_at = now_ms();
    assert!(env.has_blob("team/app", &layer).await);
    let row = env.meta.live_blob(&layer).await.unwrap().expect("live row");
    assert!(
        row.touched_at >= head_at,
        "HEAD did not touch the blob: touched_at {} < {head_at}",
        row.touched_at
    );

    // Past the original grace period, within the one the HEAD started.
    let wait = pushed + GRACE + 60 - now_ms();
    if wait > 0 {
        sleep_ms(wait as u64).await;
    }
    let report = env.gc().await;
    let gc_done = now_ms();
    assert!(
        gc_done < head_at + GRACE,
        "timing: the run ended {} ms after the HEAD, past its grace period; the machine was too slow for this test",
        gc_done - head_at
    );
    assert!(
        stored(&env, &layer),
        "a blob a client saw by HEAD was collected"
    );
    assert_eq!(
        report.deleted_blobs, 1,
        "only the untouched one: {report:?}"
    );
    assert!(
        !stored(&env, &untouched),
        "the untouched blob outlived its grace"
    );
    assert_eq!(
        blob_status(&env, Method::HEAD, "team/app", &untouched).await,
        StatusCode::NOT_FOUND
    );

    // The client now pushes its manifest, relying on the skipped layer.
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_d = env.push_blob("team/app", config).await;
    let manifest = image_manifest(
        &[
            (config_d.clone(), config.len()),
            (layer.clone(), layer_bytes.len()),
        ],
        None,
    );
    let r = env
        .put_manifest("team/app", "v1", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let img = Image {
        digest: Digest::sha256_of(&manifest),
        manifest,
        blobs: vec![config_d, layer.clone()],
    };
    sleep_ms(GRACE as u64 + 50).await;
    let report = env.gc().await;
    assert_eq!(report.deleted_blobs, 0, "{report:?}");
    assert_pulls(&env, "team/app", "v1", &img).await;
}

// ---- 6. referrers ----

#[tokio::test]
async fn deleting_a_subject_deletes_its_referrers() {
    let env = Env::new(test_config(Duration::ZERO)).await;
    let img = env
        .push_image("team/app", Some("v1"), &[b"subject layer"])
        .await;
    let sig = env
        .push_image_with(
            "team/app",
            None,
            &[b"signature payload"],
            Some(&img),
            Some("application/vnd.example.signature"),
        )
        .await;
    assert_eq!(
        referrers(&env, "team/app", &img.digest).await,
        vec![sig.digest.to_string()]
    );
    // While its subject lives, the untagged referrer is live.
    let report = env.gc().await;
    assert_eq!(report.deleted_manifests, 0, "{report:?}");
    assert_pulls(&env, "team/app", &sig.digest.to_string(), &sig).await;

    assert_eq!(
        delete(&env, "team/app", &img.digest.to_string())
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert!(referrers(&env, "team/app", &img.digest).await.is_empty());
    assert_eq!(
        manifest_status(&env, "team/app", &sig.digest.to_string()).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        manifest_status(&env, "team/app", "v1").await,
        StatusCode::NOT_FOUND
    );

    let report = env.gc().await;
    assert_eq!(report.deleted_blobs, 4, "{report:?}");
    assert!(env.blob_files().is_empty(), "{:?}", env.blob_files());
}

#[tokio::test]
async fn a_referrer_waits_a_grace_period_for_its_subject() {
    let env = Env::new(test_config(Duration::from_millis(300))).await;
    // The subject that never comes.
    let phantom_manifest = image_manifest(
        &[
            (Digest::sha256_of(b"nothing"), 7),
            (Digest::sha256_of(b"at all"), 6),
        ],
        None,
    );
    let phantom = Image {
        digest: Digest::sha256_of(&phantom_manifest),
        manifest: phantom_manifest,
        blobs: vec![],
    };
    let orphan = env
        .push_image_with("team/app", None, &[b"orphan sig"], Some(&phantom), None)
        .await;
    // The subject that comes late, within the grace period.
    let subject = prepare_image(&env, "team/app", &[b"{\"late\":true}", b"late layer"]).await;
    let early = env
        .push_image_with("team/app", None, &[b"early sig"], Some(&subject), None)
        .await;

    let report = env.gc().await;
    assert_eq!(report.deleted_manifests, 0, "{report:?}");
    assert_pulls(&env, "team/app", &orphan.digest.to_string(), &orphan).await;
    assert_eq!(
        referrers(&env, "team/app", &phantom.digest).await,
        vec![orphan.digest.to_string()]
    );

    sleep_ms(100).await;
    put_image(&env, "team/app", "v1", &subject).await;

    sleep_ms(300).await;
    let report = env.gc().await;
    assert_eq!(
        report.deleted_manifests, 1,
        "only the orphaned referrer: {report:?}"
    );
    assert_eq!(report.deleted_blobs, 2, "{report:?}");
    assert_eq!(
        manifest_status(&env, "team/app", &orphan.digest.to_string()).await,
        StatusCode::NOT_FOUND
    );
    assert!(
        referrers(&env, "team/app", &phantom.digest)
            .await
            .is_empty()
    );
    for d in &orphan.blobs {
        assert!(!stored(&env, d));
    }
    assert_eq!(
        referrers(&env, "team/app", &subject.digest).await,
        vec![early.digest.to_string()]
    );
    assert_pulls(&env, "team/app", &early.digest.to_string(), &early).await;
    assert_pulls(&env, "team/app", "v1", &subject).await;
    assert_eq!(env.blob_files().len(), 4);
}

/// A referrer that a live index lists is not deleted behind the index's back when its
/// subject goes: the index must still pull completely afterwards.
#[tokio::test]
async fn a_referrer_listed_by_a_live_index_survives_its_subjects_delete() {
    let env = Env::new(test_config(Duration::ZERO)).await;
    let img = env
        .push_image("team/app", Some("v1"), &[b"subject of a bundled sbom"])
        .await;
    let sbom = env
        .push_image_with(
            "team/app",
            None,
            &[b"an sbom"],
            Some(&img),
            Some("application/spdx+json"),
        )
        .await;
    let bundle = env.push_index("team/app", Some("bundle"), &[&sbom]).await;

    let r = delete(&env, "team/app", &img.digest.to_string()).await;
    if r.status == StatusCode::CONFLICT {
        // Refusing the delete is a correct answer too; then everything is as before.
        assert_pulls(&env, "team/app", "v1", &img).await;
    } else {
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }
    env.gc().await;
    let r = env
        .request(
            Method::GET,
            "/v2/team/app/manifests/bundle",
            &[(header::ACCEPT.as_str(), OCI_INDEX)],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, bundle.manifest);
    assert_eq!(
        manifest_status(&env, "team/app", &sbom.digest.to_string()).await,
        StatusCode::OK,
        "the index {} lists {} but it is gone",
        bundle.digest,
        sbom.digest
    );
    assert_pulls(&env, "team/app", &sbom.digest.to_string(), &sbom).await;
}

// ---- 7. cosign tags ----

#[tokio::test]
async fn cosign_tags_follow_their_subject_in_the_same_repository_only() {
    let env = Env::new(test_config(Duration::ZERO)).await;
    let img = env
        .push_image("team/app", Some("v1"), &[b"signed layer"])
        .await;
    let sig_tag = format!("sha256-{}.sig", img.digest.hex());
    let att_tag = format!("sha256-{}.att", img.digest.hex());
    let sig = env
        .push_image("team/app", Some(&sig_tag), &[b"cosign signature"])
        .await;
    let att = env
        .push_image("team/app", Some(&att_tag), &[b"cosign attestation"])
        .await;
    // COSIGN_REPOSITORY: the signatures live elsewhere under the same tag name.
    let elsewhere = env
        .push_image("team/sigs", Some(&sig_tag), &[b"signature kept elsewhere"])
        .await;
    let mut expected = vec![att_tag.clone(), sig_tag.clone(), "v1".to_owned()];
    expected.sort();
    assert_eq!(tags(&env, "team/app").await, expected);

    assert_eq!(
        delete(&env, "team/app", &img.digest.to_string())
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert!(tags(&env, "team/app").await.is_empty());
    for d in [&sig.digest, &att.digest] {
        assert_eq!(
            manifest_status(&env, "team/app", &d.to_string()).await,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        manifest_status(&env, "team/app", &sig_tag).await,
        StatusCode::NOT_FOUND
    );

    let report = env.gc().await;
    assert_eq!(report.deleted_blobs, 6, "{report:?}");
    for d in img.blobs.iter().chain(&sig.blobs).chain(&att.blobs) {
        assert!(!stored(&env, d), "{d} still stored");
    }
    assert_eq!(tags(&env, "team/sigs").await, vec![sig_tag.clone()]);
    assert_pulls(&env, "team/sigs", &sig_tag, &elsewhere).await;
    assert_eq!(env.blob_files().len(), 2);
}

// ---- 8. index children ----

#[tokio::test]
async fn index_children_go_with_their_index_unless_used_elsewhere() {
    let env = Env::new(test_config(Duration::ZERO)).await;
    let only = env.push_image("team/app", None, &[b"amd64 only"]).await;
    let shared = env.push_image("team/app", None, &[b"arm64 shared"]).await;
    let tagged = env
        .push_image("team/app", Some("s390x"), &[b"s390x tagged"])
        .await;
    let index = env
        .push_index("team/app", Some("multi"), &[&only, &shared, &tagged])
        .await;
    let other = env.push_index("team/app", Some("other"), &[&shared]).await;

    // A child that a live index lists cannot be deleted.
    let r = delete(&env, "team/app", &only.digest.to_string()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let err: serde_json::Value = serde_json::from_slice(&r.body).expect("OCI error JSON");
    let first = &err["errors"][0];
    assert!(first["code"].is_string(), "{err}");
    assert!(first["message"].is_string(), "{err}");
    assert_eq!(
        r.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert_pulls(&env, "team/app", &only.digest.to_string(), &only).await;

    // A GC while everything is listed or tagged deletes nothing.
    let report = env.gc().await;
    assert_eq!(report.deleted_manifests, 0, "{report:?}");

    assert_eq!(
        delete(&env, "team/app", &index.digest.to_string())
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        manifest_status(&env, "team/app", "multi").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        manifest_status(&env, "team/app", &only.digest.to_string()).await,
        StatusCode::NOT_FOUND
    );
    assert_pulls(&env, "team/app", &shared.digest.to_string(), &shared).await;
    assert_pulls(&env, "team/app", "s390x", &tagged).await;
    assert_eq!(
        manifest_status(&env, "team/app", "other").await,
        StatusCode::OK
    );

    let report = env.gc().await;
    assert_eq!(report.deleted_manifests, 0, "{report:?}");
    assert_eq!(
        report.deleted_blobs, 2,
        "the blobs of the only child: {report:?}"
    );
    for d in &only.blobs {
        assert!(!stored(&env, d));
    }
    assert_pulls(&env, "team/app", &shared.digest.to_string(), &shared).await;
    assert_pulls(&env, "team/app", "s390x", &tagged).await;

    // The second index loses its tag: GC collects it and the child it alone listed.
    assert_eq!(
        delete(&env, "team/app", "other").await.status,
        StatusCode::ACCEPTED
    );
    let report = env.gc().await;
    assert_eq!(report.deleted_manifests, 2, "{report:?}");
    assert_eq!(report.deleted_blobs, 2, "{report:?}");
    for d in [&other.digest, &shared.digest] {
        assert_eq!(
            manifest_status(&env, "team/app", &d.to_string()).await,
            StatusCode::NOT_FOUND
        );
    }
    assert_pulls(&env, "team/app", "s390x", &tagged).await;
    assert_eq!(env.blob_files().len(), 2);
}

// ---- 9. dry runs ----

#[tokio::test]
async fn a_dry_run_reports_what_the_real_run_does() {
    let env = Env::new(test_config(Duration::ZERO)).await;
    let a = env
        .push_image("team/app", Some("a"), &[b"common base", b"a on top"])
        .await;
    let b = env
        .push_image("team/app", Some("b"), &[b"common base", b"b on top"])
        .await;
    let loose = env.push_blob("team/app", b"a loose blob").await;
    assert_eq!(
        delete(&env, "team/app", "a").await.status,
        StatusCode::ACCEPTED
    );
    let doomed = [&a.blobs[0], &a.blobs[2], &loose];
    let doomed_bytes: u64 = doomed.iter().map(|d| file_len(&env, d)).sum();
    let mut files_before = env.blob_files();
    files_before.sort();

    let dry = env
        .gc_with(GcOptions {
            dry_run: true,
            ..GcOptions::default()
        })
        .await;
    assert!(dry.dry_run);
    assert_eq!(dry.deleted_manifests, 1, "{dry:?}");
    assert_eq!(dry.deleted_blobs, 3, "{dry:?}");
    assert_eq!(dry.bytes_freed, doomed_bytes, "{dry:?}");

    // Nothing happened.
    let mut files_after = env.blob_files();
    files_after.sort();
    assert_eq!(files_before, files_after);
    assert_pulls(&env, "team/app", &a.digest.to_string(), &a).await;
    assert_pulls(&env, "team/app", "b", &b).await;
    assert_eq!(tags(&env, "team/app").await, vec!["b".to_owned()]);
    let again = env
        .gc_with(GcOptions {
            dry_run: true,
            ..GcOptions::default()
        })
        .await;
    assert_eq!(
        (
            again.deleted_manifests,
            again.deleted_blobs,
            again.bytes_freed
        ),
        (dry.deleted_manifests, dry.deleted_blobs, dry.bytes_freed),
        "a dry run changed what the next one sees"
    );

    let real = env.gc().await;
    assert!(!real.dry_run);
    assert_eq!(
        (real.deleted_manifests, real.deleted_blobs, real.bytes_freed),
        (dry.deleted_manifests, dry.deleted_blobs, dry.bytes_freed),
        "dry {dry:?} real {real:?}"
    );
    for d in doomed {
        assert!(!stored(&env, d), "{d} still stored");
    }
    assert_eq!(
        manifest_status(&env, "team/app", &a.digest.to_string()).await,
        StatusCode::NOT_FOUND
    );
    assert_pulls(&env, "team/app", "b", &b).await;
    assert_eq!(env.blob_files().len(), 3);
}

/// A dry run of a GC that has a sweep to finish (its sweeper died) reports that blob too.
#[tokio::test]
async fn a_dry_run_counts_the_sweeps_the_real_run_finishes() {
    let env = Env::new(test_config(Duration::from_secs(3600))).await;
    let bytes = b"marked by a sweeper that died";
    let d = env.push_blob("team/app", bytes).await;
    let mut tx = env.meta.gc_tx().await.unwrap();
    let review = tx
        .review_blob(
            &d.to_string(),
            &GcPolicy {
                grace_ms: 0,
                untagged_age_ms: Some(0),
                lease_ms: 0,
            },
            now_ms(),
        )
        .await
        .unwrap();
    assert!(matches!(review, BlobReview::Sweep(_)), "{review:?}");
    tx.commit().await.unwrap();
    sleep_ms(5).await;

    let dry = env
        .gc_with(GcOptions {
            dry_run: true,
            ..GcOptions::default()
        })
        .await;
    assert!(stored(&env, &d));
    let real = env.gc().await;
    assert_eq!(real.deleted_blobs, 1, "{real:?}");
    assert!(!stored(&env, &d));
    assert_eq!(
        (dry.deleted_blobs, dry.bytes_freed),
        (real.deleted_blobs, real.bytes_freed),
        "dry {dry:?} real {real:?}"
    );
}

// ---- 10. idle uploads ----

/// Opens an upload session and sends `bytes` in one PATCH; returns its id.
async fn start_upload(env: &Env, repo: &str, bytes: &[u8]) -> String {
    let r = env
        .request(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let location = r.headers[header::LOCATION].to_str().unwrap().to_owned();
    let id = location.rsplit('/').next().unwrap().to_owned();
    let r = env
        .request(
            Method::PATCH,
            &location,
            &[(header::CONTENT_TYPE.as_str(), "application/octet-stream")],
            bytes.to_vec(),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    id
}

fn upload_file(env: &Env, id: &str) -> PathBuf {
    env.dir.path().join("uploads").join(id)
}

#[tokio::test]
async fn idle_upload_sessions_are_purged_with_their_bytes() {
    let env = Env::new(test_config(Duration::from_millis(300))).await;
    let idle = start_upload(&env, "team/app", b"half of a blob that").await;
    assert_eq!(
        std::fs::metadata(upload_file(&env, &idle)).unwrap().len(),
        19
    );
    sleep_ms(400).await;
    let active = start_upload(&env, "team/app", b"a live push ").await;

    let report = env.gc().await;
    assert_eq!(report.purged_uploads, 1, "{report:?}");
    assert!(
        !upload_file(&env, &idle).exists(),
        "staged bytes left behind"
    );
    assert_eq!(
        env.status(Method::GET, &format!("/v2/team/app/blobs/uploads/{idle}"))
            .await,
        StatusCode::NOT_FOUND
    );
    let r = env
        .request(
            Method::PATCH,
            &format!("/v2/team/app/blobs/uploads/{idle}"),
            &[],
            b"more".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // The active one is untouched and finishes.
    assert!(upload_file(&env, &active).exists());
    assert_eq!(
        env.status(Method::GET, &format!("/v2/team/app/blobs/uploads/{active}"))
            .await,
        StatusCode::NO_CONTENT
    );
    let whole = b"a live push finished";
    let d = Digest::sha256_of(whole);
    let r = env
        .request(
            Method::PUT,
            &format!("/v2/team/app/blobs/uploads/{active}?digest={d}"),
            &[],
            b"finished".to_vec(),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = env
        .request(Method::GET, &format!("/v2/team/app/blobs/{d}"), &[], vec![])
        .await;
    assert_eq!(r.body, whole);
}

// ---- 11. scrub ----

fn generation(path: &std::path::Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn generation_path(env: &Env, d: &Digest, generation: &str) -> PathBuf {
    let hex = d.hex();
    env.dir
        .path()
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join(generation)
}

#[tokio::test]
async fn scrub_reports_damage_and_removes_what_no_row_knows() {
    let env = Env::new(test_config(Duration::from_secs(3600))).await;
    let img = env
        .push_image(
            "team/app",
            Some("v1"),
            &[b"to be corrupted", b"to go missing"],
        )
        .await;
    let config_path = env.blob_path(&img.blobs[0]).unwrap();
    let corrupt_path = env.blob_path(&img.blobs[1]).unwrap();
    let missing_path = env.blob_path(&img.blobs[2]).unwrap();
    let flipped: Vec<u8> = std::fs::read(&corrupt_path)
        .unwrap()
        .iter()
        .map(|b| b ^ 0x20)
        .collect();
    std::fs::write(&corrupt_path, flipped).unwrap();
    std::fs::remove_file(&missing_path).unwrap();

    // Bytes no row knows: a digest without a row, and a second generation of a live digest.
    let orphan_d = Digest::sha256_of(b"left by a crash");
    let orphan_gen = uuid::Uuid::new_v4().to_string();
    let orphan_path = generation_path(&env, &orphan_d, &orphan_gen);
    std::fs::create_dir_all(orphan_path.parent().unwrap()).unwrap();
    std::fs::write(&orphan_path, b"left by a crash").unwrap();
    set_old_mtime(&orphan_path, Duration::from_secs(7200));
    let extra_gen = uuid::Uuid::new_v4().to_string();
    let extra_path = generation_path(&env, &img.blobs[0], &extra_gen);
    std::fs::copy(&config_path, &extra_path).unwrap();
    set_old_mtime(&extra_path, Duration::from_secs(7200));
    // One that may belong to an upload committing right now.
    let fresh_d = Digest::sha256_of(b"committing right now");
    let fresh_gen = uuid::Uuid::new_v4().to_string();
    let fresh_path = generation_path(&env, &fresh_d, &fresh_gen);
    std::fs::create_dir_all(fresh_path.parent().unwrap()).unwrap();
    std::fs::write(&fresh_path, b"committing right now").unwrap();

    // A staging file without a session, and an old session's staging file.
    let stale = uuid::Uuid::new_v4().to_string();
    std::fs::write(upload_file(&env, &stale), b"staged, session gone").unwrap();
    set_old_mtime(&upload_file(&env, &stale), Duration::from_secs(7200));
    let session = start_upload(&env, "team/app", b"still resumable").await;
    set_old_mtime(&upload_file(&env, &session), Duration::from_secs(7200));

    let report = env.scrub(None).await;
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.checked, 3, "{report:?}");
    assert_eq!(
        report.corrupted,
        vec![format!("{}@{}", img.blobs[1], generation(&corrupt_path))],
        "{report:?}"
    );
    assert_eq!(
        report.missing,
        vec![format!("{}@{}", img.blobs[2], generation(&missing_path))],
        "{report:?}"
    );
    let mut removed = report.orphans_removed.clone();
    removed.sort();
    let mut expected = vec![
        format!("{orphan_d}@{orphan_gen}"),
        format!("{}@{extra_gen}", img.blobs[0]),
    ];
    expected.sort();
    assert_eq!(removed, expected, "{report:?}");
    assert_eq!(report.orphans_pending, 1, "{report:?}");
    assert_eq!(report.orphan_uploads_removed, 1, "{report:?}");

    assert!(!orphan_path.exists());
    assert!(!extra_path.exists());
    assert!(
        config_path.exists(),
        "the live generation went with the orphan"
    );
    assert!(fresh_path.exists());
    assert!(corrupt_path.exists(), "scrub only reports corruption");
    assert!(!upload_file(&env, &stale).exists());
    assert!(upload_file(&env, &session).exists());
    assert_eq!(
        env.status(
            Method::GET,
            &format!("/v2/team/app/blobs/uploads/{session}")
        )
        .await,
        StatusCode::NO_CONTENT
    );
    let r = env
        .request(
            Method::GET,
            &format!("/v2/team/app/blobs/{}", img.blobs[0]),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(Digest::sha256_of(&r.body), img.blobs[0]);

    // With no grace period, the fresh orphan goes too.
    sleep_ms(20).await;
    let report = env.scrub(Some(Duration::ZERO)).await;
    assert_eq!(
        report.orphans_removed,
        vec![format!("{fresh_d}@{fresh_gen}")],
        "{report:?}"
    );
    assert_eq!(report.orphans_pending, 0, "{report:?}");
    assert!(!fresh_path.exists());
    assert!(upload_file(&env, &session).exists());
}

// ---- 12. a sweep whose sweeper died ----

#[tokio::test]
async fn the_next_run_finishes_a_dead_sweepers_work() {
    let env = Env::new(test_config(Duration::from_secs(3600))).await;
    let bytes = b"marked, then the sweeper died";
    let d = env.push_blob("team/app", bytes).await;
    let old_path = env.blob_path(&d).unwrap();

    let policy = GcPolicy {
        grace_ms: 0,
        untagged_age_ms: Some(0),
        lease_ms: 0,
    };
    let mut tx = env.meta.gc_tx().await.unwrap();
    let review = tx
        .review_blob(&d.to_string(), &policy, now_ms())
        .await
        .unwrap();
    let BlobReview::Sweep(sweep) = review else {
        panic!("expected a sweep, got {review:?}");
    };
    assert_eq!(sweep.generation, generation(&old_path));
    tx.commit().await.unwrap();
    // ... and the process died before deleting the bytes.

    assert!(old_path.exists());
    assert_eq!(
        blob_status(&env, Method::HEAD, "team/app", &d).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        blob_status(&env, Method::GET, "team/app", &d).await,
        StatusCode::NOT_FOUND
    );

    // The same digest pushed meanwhile gets a new generation of its own.
    assert_eq!(env.push_blob("team/app", bytes).await, d);
    assert!(env.has_blob("team/app", &d).await);
    assert_eq!(env.blob_files().len(), 2);

    sleep_ms(5).await;
    let report = env.gc().await;
    assert_eq!(report.deleted_blobs, 1, "{report:?}");
    assert_eq!(report.bytes_freed, bytes.len() as u64, "{report:?}");
    assert!(!old_path.exists(), "the dead sweep's bytes are still there");
    let files = env.blob_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_ne!(files[0], old_path);
    let r = env
        .request(Method::GET, &format!("/v2/team/app/blobs/{d}"), &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, bytes);

    let report = env.gc().await;
    assert_eq!(report.deleted_blobs, 0, "{report:?}");
}

// ---- 13. storage accounting ----

#[tokio::test]
async fn storage_usage_counts_referenced_shared_and_reclaimable_bytes() {
    const GRACE_MS: u64 = 400;
    let env = Env::new(test_config(Duration::from_millis(GRACE_MS))).await;
    let shared: &[u8] = &[7u8; 100];
    let a = env
        .push_image("team/a", Some("v1"), &[shared, &[1u8; 200]])
        .await;
    let b = env
        .push_image("team/b", Some("v1"), &[shared, &[2u8; 300]])
        .await;
    let loose: &[u8] = &[3u8; 50];
    env.push_blob("team/a", loose).await;
    let size = |d: &Digest| file_len(&env, d);
    let (ca, cb) = (size(&a.blobs[0]), size(&b.blobs[0]));

    let u = env.meta.storage_usage().await.unwrap();
    assert_eq!(u.blob_count, 6, "{u:?}");
    assert_eq!(u.stored_bytes, ca + cb + 100 + 200 + 300 + 50, "{u:?}");
    assert_eq!(u.referenced_bytes, ca + cb + 100 + 200 + 300, "{u:?}");
    assert_eq!(u.reclaimable_bytes, 50, "{u:?}");
    assert_eq!(u.repositories.len(), 2, "{u:?}");
    let ra = &u.repositories[0];
    let rb = &u.repositories[1];
    assert_eq!(
        (
            ra.name.as_str(),
            ra.referenced_bytes,
            ra.shared_bytes,
            ra.manifest_bytes
        ),
        ("team/a", ca + 100 + 200, 100, a.manifest.len() as u64),
        "{u:?}"
    );
    assert_eq!(
        (
            rb.name.as_str(),
            rb.referenced_bytes,
            rb.shared_bytes,
            rb.manifest_bytes
        ),
        ("team/b", cb + 100 + 300, 100, b.manifest.len() as u64),
        "{u:?}"
    );

    // b's image goes; its blobs stay through the grace period, now reclaimable.
    assert_eq!(
        delete(&env, "team/b", "v1").await.status,
        StatusCode::ACCEPTED
    );
    let report = env.gc().await;
    assert_eq!(report.deleted_manifests, 1, "{report:?}");
    assert_eq!(report.deleted_blobs, 0, "{report:?}");
    let u = env.meta.storage_usage().await.unwrap();
    assert_eq!(u.blob_count, 6, "{u:?}");
    assert_eq!(u.referenced_bytes, ca + 100 + 200, "{u:?}");
    assert_eq!(u.reclaimable_bytes, cb + 300 + 50, "{u:?}");
    assert_eq!(
        (
            u.repositories[0].referenced_bytes,
            u.repositories[0].shared_bytes
        ),
        (ca + 100 + 200, 0),
        "{u:?}"
    );
    assert_eq!(
        (
            u.repositories[1].referenced_bytes,
            u.repositories[1].shared_bytes,
            u.repositories[1].manifest_bytes
        ),
        (0, 0, 0),
        "{u:?}"
    );

    // Once the grace period is over, the reclaimable bytes are what a run frees.
    sleep_ms(GRACE_MS + 100).await;
    let report = env.gc().await;
    assert_eq!(report.bytes_freed, cb + 300 + 50, "{report:?}");
    let u = env.meta.storage_usage().await.unwrap();
    assert_eq!(u.reclaimable_bytes, 0, "{u:?}");
    assert_eq!(u.stored_bytes, ca + 100 + 200, "{u:?}");
    assert_eq!(u.blob_count, 3, "{u:?}");
}

// ---- 14. jobs ----

async fn wait_for_job(env: &Env, id: i64) -> berth_meta::Job {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let job = env.meta.get_job(id).await.unwrap().expect("job row");
        if matches!(
            job.state,
            JobState::Succeeded | JobState::Failed | JobState::Dead
        ) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} did not finish in 10 s: {job:?}"
        );
        sleep_ms(20).await;
    }
}

fn runner(env: &Env, wake: Arc<tokio::sync::Notify>) -> JobRunner {
    let blobs: Arc<dyn berth_storage::BlobStore> = env.blobs.clone();
    JobRunner::new(env.meta.clone(), blobs, env.config.clone(), wake)
}

async fn stop(cancel: CancellationToken, handle: tokio::task::JoinHandle<()>) {
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("the runner stops when cancelled")
        .expect("the runner did not panic");
}

#[tokio::test]
async fn the_job_runner_runs_queued_gc_and_reclaims_expired_leases() {
    let mut config = test_config(Duration::ZERO);
    config.gc.schedule = String::new();
    config.scrub.schedule = String::new();
    let env = Env::new(config).await;

    // A queued job is run.
    env.push_image("team/app", Some("v1"), &[b"job layer"])
        .await;
    assert_eq!(
        delete(&env, "team/app", "v1").await.status,
        StatusCode::ACCEPTED
    );
    let id = env
        .meta
        .enqueue_job("gc", &serde_json::json!({}), false)
        .await
        .unwrap();
    let wake = Arc::new(tokio::sync::Notify::new());
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(runner(&env, wake.clone()).run(cancel.clone()));
    wake.notify_one();
    let job = wait_for_job(&env, id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(job.attempts, 1, "{job:?}");
    let mine = format!("/{}/", std::process::id());
    assert!(
        job.lease_owner
            .as_deref()
            .is_some_and(|o| o.contains(&mine)),
        "the finished job names the worker that ran it: {job:?}"
    );
    let result = job.result.expect("a stored report");
    assert_eq!(result["deleted_blobs"], 2, "{result}");
    assert_eq!(result["deleted_manifests"], 1, "{result}");
    assert!(env.blob_files().is_empty());
    stop(cancel, handle).await;

    // A job whose worker died while running it is claimed again once its lease ran out.
    env.push_image("team/app", Some("v2"), &[b"second job layer"])
        .await;
    assert_eq!(
        delete(&env, "team/app", "v2").await.status,
        StatusCode::ACCEPTED
    );
    let id = env
        .meta
        .enqueue_job("gc", &serde_json::json!({}), false)
        .await
        .unwrap();
    let claimed = env
        .meta
        .claim_job("a-worker-that-dies", 0)
        .await
        .unwrap()
        .expect("the queued job");
    assert_eq!(claimed.id, id);
    let job = env.meta.get_job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.lease_owner.as_deref(), Some("a-worker-that-dies"));
    sleep_ms(5).await;

    let cancel = CancellationToken::new();
    let handle =
        tokio::spawn(runner(&env, Arc::new(tokio::sync::Notify::new())).run(cancel.clone()));
    let job = wait_for_job(&env, id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(job.attempts, 2, "{job:?}");
    assert!(
        job.lease_owner
            .as_deref()
            .is_some_and(|o| o.contains(&mine)),
        "finished by the live worker, not the one that died: {job:?}"
    );
    let result = job.result.expect("a stored report");
    assert_eq!(result["deleted_blobs"], 2, "{result}");
    assert!(env.blob_files().is_empty());
    stop(cancel, handle).await;
}

// ---- 15. review findings (issue 15) ----

/// Finding 2: with `--grace-period`, items a pass re-queues for later were due again at once
/// and reviewed over and over (one untagged manifest: 10,000 reviews). A pass never picks an
/// item it has already re-queued.
#[tokio::test]
async fn a_grace_override_reviews_each_item_once() {
    let mut config = test_config(Duration::from_secs(24 * 3600));
    config.gc.untagged_age.0 = Duration::from_secs(24 * 3600);
    let env = Env::new(config).await;
    let img = env
        .push_image("team/app", None, &[b"untagged for a day"])
        .await;
    let report = env
        .gc_with(GcOptions {
            grace_period: Some(Duration::ZERO),
            ..GcOptions::default()
        })
        .await;
    assert_eq!(report.reviewed_manifests, 1, "{report:?}");
    assert_eq!(report.deleted_manifests, 0, "{report:?}");
    assert!(env.has_manifest("team/app", &img.digest.to_string()).await);
}

/// Finding 2: `berth gc --dry-run --grace-period 1s` ran inside one write transaction, so
/// pushes failed with "database is locked" while it ran. No GC mode may make a client request
/// fail: pushes made while a dry run works all succeed, and the dry run reports each item
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_never_blocks_pushes() {
    let mut config = test_config(Duration::from_secs(24 * 3600));
    config.gc.untagged_age.0 = Duration::from_secs(24 * 3600);
    let env = Arc::new(Env::new(config).await);
    let n: u64 = 30;
    for i in 0..n {
        env.push_image("team/app", None, &[format!("untagged {i}").as_bytes()])
            .await;
    }
    let dry = {
        let env = env.clone();
        tokio::spawn(async move {
            env.gc_with(GcOptions {
                dry_run: true,
                grace_period: Some(Duration::from_secs(1)),
                ..GcOptions::default()
            })
            .await
        })
    };
    let mut pushed = 0;
    while !dry.is_finished() || pushed < 3 {
        // push_image asserts 201 for every blob and the manifest.
        env.push_image(
            "team/other",
            Some(&format!("t{pushed}")),
            &[format!("pushed during the dry run {pushed}").as_bytes()],
        )
        .await;
        pushed += 1;
    }
    let report = dry.await.expect("the dry run ends");
    assert_eq!(report.reviewed_manifests, n, "{report:?}");
    assert_eq!(report.deleted_manifests, 0, "{report:?}");
}

/// Finding 12: a repository that an upload created and that holds nothing (no manifest, no
/// tag, no blob link, no session) is removed by garbage collection.
#[tokio::test]
async fn empty_repositories_are_collected() {
    let env = Env::new(test_config(Duration::ZERO)).await;
    let id = start_upload(&env, "team/empty", b"abandoned").await;
    assert_eq!(
        env.status(
            Method::DELETE,
            &format!("/v2/team/empty/blobs/uploads/{id}")
        )
        .await,
        StatusCode::NO_CONTENT
    );
    env.push_image("team/kept", Some("v1"), &[b"kept"]).await;
    let name = |s: &str| berth_core::RepoName::parse(s).expect("a name");
    assert!(
        env.meta
            .repo_id(&name("team/empty"))
            .await
            .unwrap()
            .is_some()
    );
    env.gc().await;
    assert_eq!(env.meta.repo_id(&name("team/empty")).await.unwrap(), None);
    assert!(
        env.meta
            .repo_id(&name("team/kept"))
            .await
            .unwrap()
            .is_some()
    );
    // The name works again.
    env.push_image("team/empty", Some("v1"), &[b"back"]).await;
}
