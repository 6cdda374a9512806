//! Reading, deleting and mounting blobs.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};

use crate::common::*;

#[tokio::test]
async fn get_and_head_serve_the_blob_with_its_headers() {
    let app = App::new().await;
    let data = data("get", 5000);
    let d = app.push_blob("a", &data).await;
    let uri = format!("/v2/a/blobs/{d}");

    let get = app.get(&uri).await;
    get.assert_status(StatusCode::OK);
    assert!(get.body == data);
    assert_eq!(get.header("content-length"), Some("5000"));
    assert_eq!(get.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(get.header("etag"), Some(format!("\"{d}\"").as_str()));
    assert_eq!(get.header("accept-ranges"), Some("bytes"));

    let head = app.head(&uri).await;
    head.assert_status(StatusCode::OK);
    assert!(head.body.is_empty(), "HEAD has a body");
    assert_eq!(head.stable_headers(), get.stable_headers());
}

#[tokio::test]
async fn range_requests_are_206_with_content_range() {
    let app = App::new().await;
    let data = data("range", 1000);
    let d = app.push_blob("a", &data).await;
    let uri = format!("/v2/a/blobs/{d}");

    for (range, start, end) in [
        ("bytes=10-19", 10, 19),
        ("bytes=990-", 990, 999),
        ("bytes=-5", 995, 999),
        ("bytes=900-5000", 900, 999),
        ("bytes=0-0", 0, 0),
    ] {
        let r = app
            .call(
                req(Method::GET, &uri).header(header::RANGE, range),
                Body::empty(),
            )
            .await;
        r.assert_status(StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {start}-{end}/1000").as_str()),
            "{range}"
        );
        assert_eq!(
            r.header("content-length"),
            Some((end - start + 1).to_string().as_str()),
            "{range}"
        );
        assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
        assert!(r.body == data[start..=end], "{range}: wrong bytes");
    }
}

#[tokio::test]
async fn unsatisfiable_range_is_416() {
    let app = App::new().await;
    let d = app.push_blob("a", &data("short", 100)).await;
    for range in ["bytes=100-", "bytes=500-600"] {
        let r = app
            .call(
                req(Method::GET, &format!("/v2/a/blobs/{d}")).header(header::RANGE, range),
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(r.header("content-range"), Some("bytes */100"), "{range}");
    }
}

#[tokio::test]
async fn unknown_blob_is_404_blob_unknown() {
    let app = App::new().await;
    app.push_blob("a", b"something").await;
    let missing = sha256(b"missing");
    let err = app
        .get(&format!("/v2/a/blobs/{missing}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    assert_eq!(err["detail"]["digest"], missing.as_str());
    let r = app.head(&format!("/v2/a/blobs/{missing}")).await;
    r.assert_status(StatusCode::NOT_FOUND);
    app.get("/v2/a/blobs/sha256:tooshort")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
}

#[tokio::test]
async fn a_blob_is_invisible_through_another_repository_until_mounted() {
    let app = App::new().await;
    let data = data("private", 2000);
    let d = app.push_blob("a", &data).await;

    // b does not exist yet, then exists without the blob.
    app.get(&format!("/v2/b/blobs/{d}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    app.push_blob("b", b"another blob").await;
    app.get(&format!("/v2/b/blobs/{d}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    app.head(&format!("/v2/b/blobs/{d}"))
        .await
        .assert_status(StatusCode::NOT_FOUND);

    let r = app
        .call(
            req(
                Method::POST,
                &format!("/v2/b/blobs/uploads/?mount={d}&from=a"),
            ),
            Body::empty(),
        )
        .await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(r.location(), format!("/v2/b/blobs/{d}"));
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));

    let r = app.get(&format!("/v2/b/blobs/{d}")).await;
    r.assert_status(StatusCode::OK);
    assert!(r.body == data);
}

#[tokio::test]
async fn mounting_a_blob_the_repository_already_has_is_201() {
    let app = App::new().await;
    let d = app.push_blob("a", b"already there").await;
    app.push_blob("b", b"already there").await;
    let r = app
        .call(
            req(
                Method::POST,
                &format!("/v2/b/blobs/uploads/?mount={d}&from=a"),
            ),
            Body::empty(),
        )
        .await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(r.location(), format!("/v2/b/blobs/{d}"));
}

#[tokio::test]
async fn mount_from_a_repository_without_the_blob_opens_a_session() {
    let app = App::new().await;
    let data = data("elsewhere", 100);
    let d = app.push_blob("c", &data).await;
    app.push_blob("a", b"a exists").await;

    for from in ["a", "doesnotexist"] {
        let r = app
            .call(
                req(
                    Method::POST,
                    &format!("/v2/b/blobs/uploads/?mount={d}&from={from}"),
                ),
                Body::empty(),
            )
            .await;
        r.assert_status(StatusCode::ACCEPTED);
        let session = r.location();
        assert!(session.starts_with("/v2/b/blobs/uploads/"), "{session}");
        assert!(r.header("docker-upload-uuid").is_some());
        app.get(&format!("/v2/b/blobs/{d}"))
            .await
            .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");

        // The session is a normal one.
        app.call(
            req(Method::PUT, &with_query(&session, &format!("digest={d}"))),
            data.clone(),
        )
        .await
        .assert_status(StatusCode::CREATED);
        app.delete(&format!("/v2/b/blobs/{d}"))
            .await
            .assert_status(StatusCode::ACCEPTED);
    }
}

#[tokio::test]
async fn mount_without_from() {
    let app = App::new().await;
    let data = data("anywhere", 100);
    let d = app.push_blob("a", &data).await;

    let r = app
        .call(
            req(Method::POST, &format!("/v2/b/blobs/uploads/?mount={d}")),
            Body::empty(),
        )
        .await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(r.location(), format!("/v2/b/blobs/{d}"));
    let r = app.get(&format!("/v2/b/blobs/{d}")).await;
    r.assert_status(StatusCode::OK);
    assert!(r.body == data);

    let unknown = sha256(b"never pushed");
    let r = app
        .call(
            req(
                Method::POST,
                &format!("/v2/b/blobs/uploads/?mount={unknown}"),
            ),
            Body::empty(),
        )
        .await;
    r.assert_status(StatusCode::ACCEPTED);
    assert!(r.location().starts_with("/v2/b/blobs/uploads/"));
}

#[tokio::test]
async fn delete_blob_is_202_then_404() {
    let app = App::new().await;
    let d = app.push_blob("a", b"to delete").await;
    app.push_blob("b", b"to delete").await;

    let r = app.delete(&format!("/v2/a/blobs/{d}")).await;
    r.assert_status(StatusCode::ACCEPTED);
    app.get(&format!("/v2/a/blobs/{d}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    app.delete(&format!("/v2/a/blobs/{d}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    // Only a's link went.
    app.get(&format!("/v2/b/blobs/{d}"))
        .await
        .assert_status(StatusCode::OK);
}

#[tokio::test]
async fn a_deleted_blob_no_longer_satisfies_manifests_or_mounts() {
    let app = App::new().await;
    let image = Image::oci("deleted layer");
    for blob in image.blobs() {
        app.push_blob("a", blob).await;
    }
    let layer = sha256(&image.layers[0]);
    app.delete(&format!("/v2/a/blobs/{layer}"))
        .await
        .assert_status(StatusCode::ACCEPTED);
    let err = app
        .put_manifest("a", "v1", OCI_MANIFEST, &image.manifest)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(err["detail"]["digest"], layer.as_str());

    let r = app
        .call(
            req(
                Method::POST,
                &format!("/v2/b/blobs/uploads/?mount={layer}&from=a"),
            ),
            Body::empty(),
        )
        .await;
    r.assert_status(StatusCode::ACCEPTED);
}

#[tokio::test]
async fn deletes_are_405_when_disabled() {
    let app = App::with_config(|c| c.registry.delete_enabled = false).await;
    let image = Image::oci("keep");
    let digest = app.push_image("a", "v1", &image).await;
    let config = sha256(&image.config);

    app.delete(&format!("/v2/a/blobs/{config}"))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED");
    app.delete(&format!("/v2/a/manifests/{digest}"))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED");
    app.delete("/v2/a/manifests/v1")
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED");

    app.get(&format!("/v2/a/blobs/{config}"))
        .await
        .assert_status(StatusCode::OK);
    app.get("/v2/a/manifests/v1")
        .await
        .assert_status(StatusCode::OK);
}
