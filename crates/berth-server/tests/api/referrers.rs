//! The referrers API: manifests with a `subject`, listed as an OCI index.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

const SIG: &str = "application/vnd.example.signature.v1";
const SBOM: &str = "application/vnd.example.sbom.v1";

/// Pushes an image `v1` to repository `a` and the empty blob artifacts need; returns the
/// image and its descriptor as a subject.
async fn subject(app: &App) -> (String, Value) {
    let image = Image::oci("subject");
    let d = app.push_image("a", "v1", &image).await;
    app.push_blob("a", EMPTY_BLOB).await;
    (d, image.descriptor(None))
}

/// Pushes an artifact by digest, asserting 201 and `OCI-Subject`; returns its digest.
async fn push_referrer(app: &App, subject: &Value, artifact: &[u8]) -> String {
    let d = sha256(artifact);
    let r = app.put_manifest("a", &d, OCI_MANIFEST, artifact).await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(r.header("oci-subject"), subject["digest"].as_str());
    d
}

fn digests(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list["manifests"]
        .as_array()
        .expect("a manifests array")
        .iter()
        .map(|m| m["digest"].as_str().expect("a digest").to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_referrer_is_listed_with_its_artifact_type_and_annotations() {
    let app = App::new().await;
    let (s, subject) = subject(&app).await;
    let annotations = json!({
        "org.opencontainers.image.created": "2024-05-01T00:00:00Z",
        "org.example.signer": "ci",
    });
    let sig = artifact(&subject, SIG, annotations.clone());
    let d = push_referrer(&app, &subject, &sig).await;

    let r = app.get(&format!("/v2/a/referrers/{s}")).await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert_eq!(r.header("oci-filters-applied"), None);
    let body = r.json();
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], OCI_INDEX);
    assert_eq!(
        body["manifests"],
        json!([{
            "mediaType": OCI_MANIFEST,
            "digest": d,
            "size": sig.len(),
            "artifactType": SIG,
            "annotations": annotations,
        }])
    );
}

#[tokio::test]
async fn an_image_referrer_reports_its_config_media_type() {
    let app = App::new().await;
    let (s, subject) = subject(&app).await;
    let config = b"{\"kind\":\"attestation\"}".to_vec();
    app.push_blob("a", &config).await;
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.example.attestation.config.v1+json", &config),
        "layers": [],
        "subject": subject,
    }))
    .expect("JSON");
    let d = push_referrer(&app, &subject, &manifest).await;

    let body = app.get(&format!("/v2/a/referrers/{s}")).await.json();
    assert_eq!(body["manifests"][0]["digest"], d.as_str());
    assert_eq!(
        body["manifests"][0]["artifactType"],
        "application/vnd.example.attestation.config.v1+json"
    );
}

#[tokio::test]
async fn artifact_type_filters_and_says_so() {
    let app = App::new().await;
    let (s, subject) = subject(&app).await;
    let sig = push_referrer(&app, &subject, &artifact(&subject, SIG, json!({"n": "1"}))).await;
    let sbom = push_referrer(&app, &subject, &artifact(&subject, SBOM, json!({"n": "2"}))).await;

    let all = app.get(&format!("/v2/a/referrers/{s}")).await;
    let mut both = vec![sig.clone(), sbom.clone()];
    both.sort();
    assert_eq!(digests(&all.json()), both);

    let r = app
        .get(&format!("/v2/a/referrers/{s}?artifactType={SIG}"))
        .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let body = r.json();
    assert_eq!(digests(&body), vec![sig]);
    assert_eq!(body["manifests"][0]["artifactType"], SIG);

    let r = app
        .get(&format!(
            "/v2/a/referrers/{s}?artifactType=application/vnd.example.none"
        ))
        .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(r.json()["manifests"], json!([]));
}

#[tokio::test]
async fn an_unknown_subject_has_an_empty_list() {
    let app = App::new().await;
    subject(&app).await;
    let r = app
        .get(&format!("/v2/a/referrers/{}", sha256(b"no such subject")))
        .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    let body = r.json();
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], OCI_INDEX);
    assert_eq!(body["manifests"], json!([]));
}

#[tokio::test]
async fn an_invalid_subject_digest_is_400() {
    let app = App::new().await;
    subject(&app).await;
    for d in [
        "sha256:nothex",
        "latest",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
    ] {
        app.get(&format!("/v2/a/referrers/{d}"))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    }
}

#[tokio::test]
async fn referrers_paginate_with_a_link() {
    let app = App::new().await;
    let (s, subject) = subject(&app).await;
    let mut pushed = Vec::new();
    for i in 0..5 {
        let a = artifact(&subject, SIG, json!({ "i": i.to_string() }));
        pushed.push(push_referrer(&app, &subject, &a).await);
    }
    pushed.sort();

    let mut seen = Vec::new();
    let mut uri = format!("/v2/a/referrers/{s}?n=2");
    let mut pages = 0;
    loop {
        let r = app.get(&uri).await;
        r.assert_status(StatusCode::OK);
        let page = digests(&r.json());
        assert!(page.len() <= 2, "page of {}", page.len());
        seen.extend(page);
        pages += 1;
        match r.next_link() {
            Some(next) => uri = path_of(&next).to_owned(),
            None => break,
        }
        assert!(pages < 10, "the Link chain does not end");
    }
    assert_eq!(pages, 3);
    seen.sort();
    assert_eq!(seen, pushed);

    // With a filter the Link keeps it.
    let r = app
        .get(&format!("/v2/a/referrers/{s}?n=4&artifactType={SIG}"))
        .await;
    let next = r.next_link().expect("a next link");
    let r = app.get(path_of(&next)).await;
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(r.json()["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(r.next_link(), None);
}

/// As for tags/list and _catalog: `n=0` is an empty page, and a `Link` would only repeat it.
#[tokio::test]
async fn n_zero_is_an_empty_page_without_link() {
    let app = App::new().await;
    let (s, subject) = subject(&app).await;
    push_referrer(&app, &subject, &artifact(&subject, SIG, json!({}))).await;
    let r = app.get(&format!("/v2/a/referrers/{s}?n=0")).await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.json()["manifests"], json!([]));
    assert_eq!(r.header("link"), None);
}

#[tokio::test]
async fn a_referrer_may_be_pushed_before_its_subject() {
    let app = App::new().await;
    app.push_blob("a", EMPTY_BLOB).await;
    let later = Image::oci("later");
    let subject = later.descriptor(None);
    let d = push_referrer(&app, &subject, &artifact(&subject, SBOM, json!({}))).await;

    let r = app
        .get(&format!("/v2/a/referrers/{}", later.digest()))
        .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(digests(&r.json()), vec![d.clone()]);

    app.push_image("a", "v1", &later).await;
    let r = app
        .get(&format!("/v2/a/referrers/{}", later.digest()))
        .await;
    assert_eq!(digests(&r.json()), vec![d]);
}

#[tokio::test]
async fn a_deleted_referrer_is_no_longer_listed() {
    let app = App::new().await;
    let (s, subject) = subject(&app).await;
    let d = push_referrer(&app, &subject, &artifact(&subject, SIG, json!({}))).await;
    app.delete(&format!("/v2/a/manifests/{d}"))
        .await
        .assert_status(StatusCode::ACCEPTED);
    let r = app.get(&format!("/v2/a/referrers/{s}")).await;
    assert_eq!(r.json()["manifests"], json!([]));
}

#[tokio::test]
async fn an_index_may_have_a_subject() {
    let app = App::new().await;
    let (s, subject) = subject(&app).await;
    let child = Image::oci("index child");
    app.push_image("a", &child.digest(), &child).await;
    let idx = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": SBOM,
        "manifests": [child.descriptor(None)],
        "subject": subject,
    }))
    .expect("JSON");
    let r = app.put_manifest("a", &sha256(&idx), OCI_INDEX, &idx).await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(r.header("oci-subject"), Some(s.as_str()));
    let body = app.get(&format!("/v2/a/referrers/{s}")).await.json();
    assert_eq!(body["manifests"][0]["mediaType"], OCI_INDEX);
    assert_eq!(body["manifests"][0]["artifactType"], SBOM);
}

#[tokio::test]
async fn unknown_repository_has_an_empty_referrers_index_not_a_404() {
    let env = App::new().await;
    let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let r = env.get(&format!("/v2/never/pushed/referrers/{d}")).await;
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["manifests"], serde_json::json!([]));
}
