//! The base endpoint, the API version header, methods and paths the API does not have, and
//! the form of `Location` headers.

use axum::body::Body;
use axum::http::{Method, StatusCode};

use crate::common::*;

const SOME_DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SOME_UUID: &str = "0b6f3bd2-5b8a-4e7e-9a3c-0b1f6c1e2d3f";

#[tokio::test]
async fn base_endpoint_answers_200_with_the_api_version() {
    let app = App::new().await;
    let r = app.get("/v2/").await;
    r.assert_status(StatusCode::OK);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    assert_eq!(r.json(), serde_json::json!({}));

    let r = app.head("/v2/").await;
    r.assert_status(StatusCode::OK);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
}

#[tokio::test]
async fn error_responses_carry_the_api_version() {
    let app = App::new().await;
    for uri in [
        "/v2/nope/manifests/latest".to_owned(),
        format!("/v2/nope/blobs/{SOME_DIGEST}"),
        "/v2/nope/tags/list".to_owned(),
        "/v2/Bad/tags/list".to_owned(),
    ] {
        let r = app.get(&uri).await;
        assert!(r.status.is_client_error(), "{uri}: {}", r.status);
        assert_eq!(
            r.header("docker-distribution-api-version"),
            Some("registry/2.0"),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn unsupported_methods_are_405_unsupported() {
    let app = App::new().await;
    let cases = [
        (Method::PUT, "/v2/".to_owned()),
        (Method::POST, "/v2/".to_owned()),
        (Method::POST, "/v2/a/manifests/latest".to_owned()),
        (Method::PATCH, "/v2/a/manifests/latest".to_owned()),
        (Method::PUT, format!("/v2/a/blobs/{SOME_DIGEST}")),
        (Method::PATCH, format!("/v2/a/blobs/{SOME_DIGEST}")),
        (Method::POST, format!("/v2/a/blobs/{SOME_DIGEST}")),
        (Method::GET, "/v2/a/blobs/uploads/".to_owned()),
        (Method::PUT, "/v2/a/blobs/uploads/".to_owned()),
        (Method::POST, format!("/v2/a/blobs/uploads/{SOME_UUID}")),
        (Method::DELETE, "/v2/a/tags/list".to_owned()),
        (Method::PUT, "/v2/a/tags/list".to_owned()),
        (Method::POST, "/v2/_catalog".to_owned()),
        (Method::DELETE, "/v2/_catalog".to_owned()),
        (Method::POST, format!("/v2/a/referrers/{SOME_DIGEST}")),
        (Method::DELETE, format!("/v2/a/referrers/{SOME_DIGEST}")),
    ];
    for (method, uri) in cases {
        let r = app.call(req(method.clone(), &uri), Body::empty()).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED");
    }
}

#[tokio::test]
async fn unknown_v2_paths_are_404_with_an_oci_error_body() {
    let app = App::new().await;
    for uri in [
        "/v2/a",
        "/v2/a/unknown/x",
        "/v2/a/blobs",
        "/v2/a/b/c/d",
        "/v2/_catalog/x",
        "/v2/a/blobs/x/uploads/y",
    ] {
        let r = app.get(uri).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(
            r.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
        let err = &r.json()["errors"][0];
        assert!(
            err["code"].is_string() && err["message"].is_string(),
            "{uri}: {err}"
        );
    }
}

#[tokio::test]
async fn locations_are_relative_by_default() {
    let app = App::new().await;
    let d = app.push_blob("a", b"hello").await;

    let session = app.start_upload("a").await;
    assert!(session.starts_with("/v2/a/blobs/uploads/"), "{session}");

    let r = app
        .call(
            req(
                Method::POST,
                &format!("/v2/a/blobs/uploads/?digest={}", sha256(b"x")),
            ),
            b"x".to_vec(),
        )
        .await;
    assert_eq!(r.location(), format!("/v2/a/blobs/{}", sha256(b"x")));

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

    let image = Image::oci("loc");
    for blob in image.blobs() {
        app.push_blob("a", blob).await;
    }
    let r = app
        .put_manifest("a", "v1", OCI_MANIFEST, &image.manifest)
        .await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(r.location(), format!("/v2/a/manifests/{}", image.digest()));
}

#[tokio::test]
async fn locations_are_absolute_under_the_external_url() {
    let base = "https://registry.example.com";
    let app = App::with_config(|c| c.server.external_url = Some(format!("{base}/"))).await;

    let session = app.start_upload("a").await;
    assert!(
        session.starts_with(&format!("{base}/v2/a/blobs/uploads/")),
        "{session}"
    );

    // Every later Location of the session is absolute too, including a 416's.
    let r = app
        .call(
            req(Method::PATCH, path_of(&session)).header("content-range", "0-2"),
            b"abc".to_vec(),
        )
        .await;
    r.assert_status(StatusCode::ACCEPTED);
    assert_eq!(r.location(), session);
    let r = app
        .call(
            req(Method::PATCH, path_of(&session)).header("content-range", "10-12"),
            b"def".to_vec(),
        )
        .await;
    r.assert_status(StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.location(), session);

    let r = app
        .call(
            req(
                Method::PUT,
                &with_query(path_of(&session), &format!("digest={}", sha256(b"abc"))),
            ),
            Body::empty(),
        )
        .await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(
        r.location(),
        format!("{base}/v2/a/blobs/{}", sha256(b"abc"))
    );

    let image = Image::oci("abs");
    for blob in image.blobs() {
        app.push_blob("a", blob).await;
    }
    let r = app
        .put_manifest("a", "v1", OCI_MANIFEST, &image.manifest)
        .await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(
        r.location(),
        format!("{base}/v2/a/manifests/{}", image.digest())
    );

    // Pagination links follow the same rule.
    app.push_manifest("a", "v2", OCI_MANIFEST, &image.manifest)
        .await;
    let r = app.get("/v2/a/tags/list?n=1").await;
    let next = r.next_link().expect("a next link");
    assert!(
        next.starts_with(&format!("{base}/v2/a/tags/list?")),
        "{next}"
    );
    let r = app.get(path_of(&next)).await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.json()["tags"], serde_json::json!(["v2"]));
}
