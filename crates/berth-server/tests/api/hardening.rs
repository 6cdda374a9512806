//! Regression tests of the security review (issue 15): each test names its finding and failed
//! before the fix. Settings introduced by a fix are given as TOML, so that a test of a setting
//! that did not exist yet failed by refusing the key instead of not compiling.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use bytes::Bytes;
use serde_json::json;

use crate::common::*;

/// Finding 10: a `Content-Range` whose length wraps (`0-18446744073709551615`) with an empty
/// body was accepted with 202; any arithmetic on client numbers is checked, this is 416.
#[tokio::test]
async fn a_content_range_whose_length_wraps_is_416() {
    let app = App::new().await;
    let session = app.start_upload("a").await;
    let r = app
        .call(
            req(Method::PATCH, &session)
                .header("content-range", "0-18446744073709551615")
                .header("content-length", "0"),
            Body::empty(),
        )
        .await;
    r.assert_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    // The session is untouched.
    let r = app.get(&session).await;
    r.assert_status(StatusCode::NO_CONTENT);
    assert_eq!(r.header("range"), Some("0-0"));
}

/// The spec's main branch: `Range: bytes=500-0` is unsatisfiable (416), not the whole blob.
#[tokio::test]
async fn a_backwards_range_is_416() {
    let app = App::new().await;
    let blob = data("range", 1000);
    let d = app.push_blob("a", &blob).await;
    let r = app
        .call(
            req(Method::GET, &format!("/v2/a/blobs/{d}")).header("range", "bytes=500-0"),
            Body::empty(),
        )
        .await;
    r.assert_status(StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), Some("bytes */1000"));
}

/// Finding 13: JSON nested deeper than 64 levels is MANIFEST_INVALID.
#[tokio::test]
async fn deeply_nested_manifests_are_manifest_invalid() {
    let app = App::new().await;
    let depth = 100;
    let img = Image::oci_with("nested", |m| {
        let mut v = json!(1);
        for _ in 0..depth {
            v = json!([v]);
        }
        m["x-nested"] = v;
    });
    for blob in img.blobs() {
        app.push_blob("a", blob).await;
    }
    let r = app
        .put_manifest("a", "deep", img.media_type, &img.manifest)
        .await;
    let err = r.assert_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    assert!(
        err["message"].as_str().unwrap_or("").contains("nested"),
        "{err}"
    );
}

/// The spec lists 202, 400, 404 and 405 for a manifest delete: a manifest that an index
/// still lists is refused with 400 DENIED (not 409), the message naming the index.
#[tokio::test]
async fn deleting_a_manifest_an_index_lists_is_400_denied() {
    let app = App::new().await;
    let child = Image::oci("listed child");
    let d = app.push_image("a", &child.digest(), &child).await;
    let idx = index(OCI_INDEX, &[child.descriptor(Some(("linux", "amd64")))]);
    let idx_digest = app.push_manifest("a", "multi", OCI_INDEX, &idx).await;
    let r = app.delete(&format!("/v2/a/manifests/{d}")).await;
    let err = r.assert_error(StatusCode::BAD_REQUEST, "DENIED");
    assert!(
        err["message"].as_str().unwrap_or("").contains(&idx_digest),
        "{err}"
    );
    app.head(&format!("/v2/a/manifests/{d}"))
        .await
        .assert_status(StatusCode::OK);
}

/// Finding 9: a manifest with more references than `limits.manifest_max_references` is
/// refused before it holds the database writer.
#[tokio::test]
async fn a_manifest_over_the_reference_limit_is_refused() {
    let app = App::with_toml("[limits]\nmanifest_max_references = 3\n").await;
    let layers: Vec<Vec<u8>> = (0..3).map(|i| data(&format!("l{i}"), 10)).collect();
    let img = Image::oci_with("many layers", |m| {
        m["layers"] = json!(
            layers
                .iter()
                .map(|l| descriptor(OCI_LAYER, l))
                .collect::<Vec<_>>()
        );
    });
    app.push_blob("a", &img.config).await;
    for l in &layers {
        app.push_blob("a", l).await;
    }
    // Config and three layers: four references.
    let r = app
        .put_manifest("a", "many", img.media_type, &img.manifest)
        .await;
    let err = r.assert_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .contains("manifest_max_references"),
        "{err}"
    );
    // Three are fine.
    let ok = Image::oci_with("two layers", |m| {
        m["layers"] = json!([
            descriptor(OCI_LAYER, &layers[0]),
            descriptor(OCI_LAYER, &layers[1])
        ]);
    });
    app.push_blob("a", &ok.config).await;
    app.push_manifest("a", "ok", ok.media_type, &ok.manifest)
        .await;
}

/// Finding 9: upload buffers are bounded in total. With room for one upload, a second
/// streaming upload gets 429 with `Retry-After` while the first is in flight, and goes
/// through once it finished.
#[tokio::test]
async fn uploads_beyond_the_buffer_memory_get_429() {
    let app = App::with_toml("[limits]\nupload_buffer_memory = \"1MiB\"\n").await;
    let first = app.start_upload("a").await;
    let (mut held, body) = HeldBody::new();
    let in_flight = app.spawn(req(Method::PATCH, &first).body(body).expect("a request"));
    held.chunks
        .send(Bytes::from_static(b"first"))
        .await
        .expect("sent");
    (&mut held.reading)
        .await
        .expect("the server reads the first body");

    let second = app.start_upload("a").await;
    let blob = data("second", 5000);
    let r = app
        .call(req(Method::PATCH, &second), streamed(&blob, 1000))
        .await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS");
    assert!(r.header("retry-after").is_some(), "429 without Retry-After");

    drop(held);
    in_flight
        .await
        .expect("the first PATCH ends")
        .assert_status(StatusCode::ACCEPTED);
    app.call(req(Method::PATCH, &second), streamed(&blob, 1000))
        .await
        .assert_status(StatusCode::ACCEPTED);
}

/// Finding 12: an upload POST alone must not leave a repository that blocks deleting its
/// project.
#[tokio::test]
async fn a_project_whose_repositories_are_empty_can_be_deleted() {
    let app = App::new().await;
    let session = app.start_upload("team/app").await;
    app.delete(&session)
        .await
        .assert_status(StatusCode::NO_CONTENT);
    let r = app.delete("/api/v1/projects/team").await;
    r.assert_status(StatusCode::NO_CONTENT);
    app.get("/api/v1/projects/team")
        .await
        .assert_status(StatusCode::NOT_FOUND);
}

/// Finding 12: a repository can be deleted through the admin API, with everything in it.
#[tokio::test]
async fn a_repository_can_be_deleted_with_its_content() {
    let app = App::new().await;
    let img = Image::oci("repo delete");
    let d = app.push_image("team/app", "v1", &img).await;
    let other = Image::oci("kept");
    app.push_image("team/other", "v1", &other).await;

    let r = app.delete("/api/v1/repositories/team/app").await;
    r.assert_status(StatusCode::OK);
    let report = r.json();
    assert_eq!(report["manifests"], 1, "{report}");
    assert_eq!(report["tags"], 1, "{report}");
    app.get("/v2/team/app/tags/list")
        .await
        .assert_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    app.head(&format!("/v2/team/app/manifests/{d}"))
        .await
        .assert_status(StatusCode::NOT_FOUND);
    let r = app.get("/v2/_catalog").await;
    assert_eq!(r.json()["repositories"], json!(["team/other"]));
    // A second delete is a 404.
    app.delete("/api/v1/repositories/team/app")
        .await
        .assert_status(StatusCode::NOT_FOUND);
    // The other repository is untouched, and the name can be pushed to again.
    app.get("/v2/team/other/manifests/v1")
        .await
        .assert_status(StatusCode::OK);
    app.push_image("team/app", "v2", &Image::oci("again")).await;
}

/// Finding 12: repositories per project are bounded (`limits.repositories_per_project`).
#[tokio::test]
async fn repositories_per_project_are_bounded() {
    let app = App::with_toml("[limits]\nrepositories_per_project = 2\n").await;
    app.push_image("team/a", "v1", &Image::oci("a")).await;
    app.push_image("team/b", "v1", &Image::oci("b")).await;
    let r = app
        .call(
            req(Method::POST, "/v2/team/c/blobs/uploads/"),
            Body::empty(),
        )
        .await;
    let err = r.assert_error(StatusCode::FORBIDDEN, "DENIED");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .contains("repositories_per_project"),
        "{err}"
    );
    // Another project has its own budget; existing repositories keep working.
    app.push_image("other/c", "v1", &Image::oci("c")).await;
    app.push_image("team/a", "v2", &Image::oci("a2")).await;
}

/// The spec's tag parameters: a push by digest sets every `?tag=` in its transaction and
/// confirms each with an `OCI-Tag` header; an invalid one refuses the whole push.
#[tokio::test]
async fn a_push_by_digest_sets_its_tag_parameters() {
    let app = App::new().await;
    let img = Image::oci("tag params");
    for blob in img.blobs() {
        app.push_blob("a", blob).await;
    }
    let d = img.digest();
    let r = app
        .put_manifest(
            "a",
            &format!("{d}?tag=1.2.3&tag=latest"),
            img.media_type,
            &img.manifest,
        )
        .await;
    r.assert_status(StatusCode::CREATED);
    let confirmed: Vec<&str> = r
        .headers
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().expect("ASCII"))
        .collect();
    assert_eq!(confirmed, ["1.2.3", "latest"]);
    for t in ["1.2.3", "latest"] {
        let r = app.head(&format!("/v2/a/manifests/{t}")).await;
        r.assert_status(StatusCode::OK);
        assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    }
    let r = app
        .put_manifest(
            "a",
            &format!("{d}?tag=ok&tag=no%20spaces"),
            img.media_type,
            &img.manifest,
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "TAG_INVALID");
    app.head("/v2/a/manifests/ok")
        .await
        .assert_status(StatusCode::NOT_FOUND);
}

/// Sparse manifests are refused by default and accepted once the project takes them; the
/// missing part is a 404, the present ones must still match their descriptors.
#[tokio::test]
async fn sparse_manifests_follow_the_project_setting() {
    let app = App::new().await;
    let present = Image::oci("present platform");
    app.push_image("team/app", &present.digest(), &present)
        .await;
    let missing = Image::oci("missing platform");
    let idx = index(
        OCI_INDEX,
        &[
            present.descriptor(Some(("linux", "amd64"))),
            missing.descriptor(Some(("linux", "arm64"))),
        ],
    );
    app.put_manifest("team/app", "multi", OCI_INDEX, &idx)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_UNKNOWN");

    let r = app
        .call(
            req(Method::PATCH, "/api/v1/projects/team"),
            r#"{"sparse_manifests": true}"#,
        )
        .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.json()["sparse_manifests"], true);
    let d = app
        .push_manifest("team/app", "multi", OCI_INDEX, &idx)
        .await;
    app.get(&format!("/v2/team/app/manifests/{d}"))
        .await
        .assert_status(StatusCode::OK);
    app.get(&format!("/v2/team/app/manifests/{}", missing.digest()))
        .await
        .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    // A present child with a wrong size is still refused.
    let mut wrong = present.descriptor(Some(("linux", "amd64")));
    wrong["size"] = json!(1);
    let bad = index(OCI_INDEX, &[wrong]);
    app.put_manifest("team/app", "bad", OCI_INDEX, &bad)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    // Back to the registry's default (off).
    app.call(
        req(Method::PATCH, "/api/v1/projects/team"),
        r#"{"sparse_manifests": null}"#,
    )
    .await
    .assert_status(StatusCode::OK);
    let other = index(OCI_INDEX, &[missing.descriptor(None)]);
    app.put_manifest("team/app", "again", OCI_INDEX, &other)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_UNKNOWN");
}
