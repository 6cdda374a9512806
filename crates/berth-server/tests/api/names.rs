//! Repository names: invalid ones are refused on every endpoint before anything is stored,
//! and names containing route words (`manifests`, `blobs`, `uploads`, `tags`) work.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn invalid_repository_names_are_400_name_invalid() {
    let app = App::new().await;
    let d = sha256(b"x");
    // Upper case, traversal (plain and percent-encoded), and a trailing slash.
    for name in [
        "Upper",
        "a/B",
        "..",
        "a/..",
        "a/../b",
        "%2e%2e",
        "a/%2e%2e/b",
        "a%2fb",
        "a/",
        "a/b/",
        "-a",
    ] {
        let cases = [
            (Method::GET, format!("/v2/{name}/tags/list")),
            (Method::GET, format!("/v2/{name}/manifests/latest")),
            (Method::PUT, format!("/v2/{name}/manifests/latest")),
            (Method::GET, format!("/v2/{name}/blobs/{d}")),
            (Method::POST, format!("/v2/{name}/blobs/uploads/")),
            (
                Method::POST,
                format!("/v2/{name}/blobs/uploads/?digest={d}"),
            ),
            (Method::GET, format!("/v2/{name}/referrers/{d}")),
        ];
        for (method, uri) in cases {
            let r = app.call(req(method.clone(), &uri), b"x".to_vec()).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {uri}");
            r.assert_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
        }
    }
    // A name over 255 characters, though each component is valid.
    let long = ["abcdefghijklmnop"; 16].join("/");
    assert!(long.len() > 255);
    app.get(&format!("/v2/{long}/tags/list"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
    app.call(
        req(Method::POST, &format!("/v2/{long}/blobs/uploads/")),
        Body::empty(),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "NAME_INVALID");

    // Nothing was created along the way.
    assert_eq!(
        app.get("/v2/_catalog").await.json(),
        json!({ "repositories": [] })
    );
}

#[tokio::test]
async fn mount_from_an_invalid_name_is_refused() {
    let app = App::new().await;
    let d = app.push_blob("a", b"x").await;
    app.call(
        req(
            Method::POST,
            &format!("/v2/b/blobs/uploads/?mount={d}&from=../a"),
        ),
        Body::empty(),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
}

/// Push a blob in chunks, an image and a tag, and pull them back, all under `repo`.
async fn round_trip(app: &App, repo: &str) {
    let image = Image::oci(repo);

    // The layer goes through a chunked session, whose URLs contain the name too.
    let session = app.start_upload(repo).await;
    assert!(
        session.starts_with(&format!("/v2/{repo}/blobs/uploads/")),
        "{session}"
    );
    let layer = &image.layers[0];
    let r = app
        .call(
            req(Method::PATCH, &session).header("content-range", format!("0-{}", layer.len() - 1)),
            layer.clone(),
        )
        .await;
    r.assert_status(StatusCode::ACCEPTED);
    let r = app.get(&r.location()).await;
    r.assert_status(StatusCode::NO_CONTENT);
    let r = app
        .call(
            req(
                Method::PUT,
                &with_query(&r.location(), &format!("digest={}", sha256(layer))),
            ),
            Body::empty(),
        )
        .await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(r.location(), format!("/v2/{repo}/blobs/{}", sha256(layer)));
    app.push_blob(repo, &image.config).await;

    let d = app
        .push_manifest(repo, "latest", OCI_MANIFEST, &image.manifest)
        .await;
    let r = app.get(&format!("/v2/{repo}/manifests/latest")).await;
    r.assert_status(StatusCode::OK);
    assert!(r.body == image.manifest);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let r = app
        .get(&format!("/v2/{repo}/blobs/{}", sha256(layer)))
        .await;
    r.assert_status(StatusCode::OK);
    assert!(r.body == *layer);
    let r = app.get(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(r.json(), json!({ "name": repo, "tags": ["latest"] }));
    let r = app.get(&format!("/v2/{repo}/referrers/{d}")).await;
    r.assert_status(StatusCode::OK);
    app.delete(&format!("/v2/{repo}/manifests/latest"))
        .await
        .assert_status(StatusCode::ACCEPTED);
    app.get(&format!("/v2/{repo}/manifests/{d}"))
        .await
        .assert_status(StatusCode::OK);
}

#[tokio::test]
async fn a_repository_named_x_manifests_y_works_end_to_end() {
    let app = App::new().await;
    round_trip(&app, "x/manifests/y").await;
    // Its neighbours are separate repositories.
    app.get("/v2/x/tags/list")
        .await
        .assert_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    app.get("/v2/y/manifests/latest")
        .await
        .assert_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    assert_eq!(
        app.get("/v2/_catalog").await.json(),
        json!({ "repositories": ["x/manifests/y"] })
    );
}

#[tokio::test]
async fn repositories_named_after_other_route_words_work() {
    let app = App::new().await;
    for repo in [
        "blobs/uploads",
        "a/blobs",
        "tags/list",
        "r/referrers/s",
        "manifests",
    ] {
        round_trip(&app, repo).await;
    }
    let mut expected = vec![
        "blobs/uploads",
        "a/blobs",
        "tags/list",
        "r/referrers/s",
        "manifests",
    ];
    expected.sort();
    assert_eq!(
        app.get("/v2/_catalog").await.json(),
        json!({ "repositories": expected })
    );
}
