//! Pushing, pulling, negotiating and deleting manifests.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::common::*;

/// Accept headers of clients that cannot read indexes.
const IMAGE_TYPES_ONLY: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

#[tokio::test]
async fn put_by_tag_and_by_digest() {
    let app = App::new().await;
    let image = Image::oci("tagged");
    for blob in image.blobs() {
        app.push_blob("a", blob).await;
    }
    let r = app
        .put_manifest("a", "v1", OCI_MANIFEST, &image.manifest)
        .await;
    r.assert_status(StatusCode::CREATED);
    let d = sha256(&image.manifest);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(r.location(), format!("/v2/a/manifests/{d}"));
    assert_eq!(r.header("oci-subject"), None);

    let other = Image::oci("by digest");
    for blob in other.blobs() {
        app.push_blob("a", blob).await;
    }
    let od = other.digest();
    let r = app
        .put_manifest("a", &od, OCI_MANIFEST, &other.manifest)
        .await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(r.header("docker-content-digest"), Some(od.as_str()));
    assert_eq!(r.location(), format!("/v2/a/manifests/{od}"));

    // Pushing the same bytes again is idempotent.
    app.push_manifest("a", "v1", OCI_MANIFEST, &image.manifest)
        .await;
    app.push_manifest("a", &od, OCI_MANIFEST, &other.manifest)
        .await;
}

#[tokio::test]
async fn get_returns_the_exact_bytes_and_head_the_same_headers() {
    let app = App::new().await;
    let image = Image::oci("exact");
    let d = app.push_image("a", "v1", &image).await;

    for reference in ["v1", d.as_str()] {
        let uri = format!("/v2/a/manifests/{reference}");
        let get = app.get(&uri).await;
        get.assert_status(StatusCode::OK);
        assert!(get.body == image.manifest, "{reference}: bytes differ");
        assert_eq!(get.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(get.header("docker-content-digest"), Some(d.as_str()));
        assert_eq!(
            get.header("content-length"),
            Some(image.manifest.len().to_string().as_str())
        );

        let head = app.head(&uri).await;
        head.assert_status(StatusCode::OK);
        assert!(head.body.is_empty(), "HEAD has a body");
        assert_eq!(head.stable_headers(), get.stable_headers());
    }
}

#[tokio::test]
async fn the_stored_content_type_is_served() {
    let app = App::new().await;
    // No mediaType in the document: the request's Content-Type is what is stored and served.
    let image = Image::oci_with("no media type", |m| {
        m.as_object_mut().expect("an object").remove("mediaType");
    });
    app.push_image("a", "v1", &image).await;
    let r = app.get("/v2/a/manifests/v1").await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
    assert!(r.body == image.manifest);

    // Parameters of the Content-Type are not part of the stored type.
    let with_params = Image::oci("params");
    for blob in with_params.blobs() {
        app.push_blob("a", blob).await;
    }
    let ct = format!("{OCI_MANIFEST}; charset=utf-8");
    app.push_manifest("a", "p1", &ct, &with_params.manifest)
        .await;
    let r = app.get("/v2/a/manifests/p1").await;
    assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));

    let docker = Image::docker("docker ct");
    app.push_image("a", "d1", &docker).await;
    let r = app.get("/v2/a/manifests/d1").await;
    assert_eq!(r.header("content-type"), Some(DOCKER_MANIFEST));
}

#[tokio::test]
async fn put_and_get_by_a_sha512_digest() {
    let app = App::new().await;
    let image = Image::oci("sha512 manifest");
    for blob in image.blobs() {
        app.push_blob("a", blob).await;
    }
    let d = sha512(&image.manifest);
    let r = app
        .put_manifest("a", &d, OCI_MANIFEST, &image.manifest)
        .await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(r.location(), format!("/v2/a/manifests/{d}"));
    let r = app.get(&format!("/v2/a/manifests/{d}")).await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert!(r.body == image.manifest);
}

#[tokio::test]
async fn a_media_type_contradicting_the_content_type_is_manifest_invalid() {
    let app = App::new().await;
    let image = Image::oci("contradiction");
    for blob in image.blobs() {
        app.push_blob("a", blob).await;
    }
    for ct in [DOCKER_MANIFEST, OCI_INDEX] {
        app.put_manifest("a", "v1", ct, &image.manifest)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    }
}

#[tokio::test]
async fn a_tag_moves_to_the_latest_push() {
    let app = App::new().await;
    let one = Image::oci("one");
    let two = Image::oci("two");
    let d1 = app.push_image("a", "latest", &one).await;
    let d2 = app.push_image("a", "latest", &two).await;
    let r = app.get("/v2/a/manifests/latest").await;
    assert_eq!(r.header("docker-content-digest"), Some(d2.as_str()));
    assert!(r.body == two.manifest);
    app.get(&format!("/v2/a/manifests/{d1}"))
        .await
        .assert_status(StatusCode::OK);
}

#[tokio::test]
async fn missing_layer_is_400_manifest_blob_unknown() {
    let app = App::new().await;
    let image = Image::oci("missing layer");
    app.push_blob("a", &image.config).await;
    let r = app
        .put_manifest("a", "v1", OCI_MANIFEST, &image.manifest)
        .await;
    let err = r.assert_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(err["detail"]["digest"], sha256(&image.layers[0]).as_str());
    app.get("/v2/a/manifests/v1")
        .await
        .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn missing_config_is_400_manifest_blob_unknown() {
    let app = App::new().await;
    let image = Image::oci("missing config");
    app.push_blob("a", &image.layers[0]).await;
    let r = app
        .put_manifest("a", "v1", OCI_MANIFEST, &image.manifest)
        .await;
    let err = r.assert_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(err["detail"]["digest"], sha256(&image.config).as_str());
}

#[tokio::test]
async fn a_layer_in_another_repository_does_not_count() {
    let app = App::new().await;
    let image = Image::oci("other repo");
    for blob in image.blobs() {
        app.push_blob("elsewhere", blob).await;
    }
    app.put_manifest("a", "v1", OCI_MANIFEST, &image.manifest)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test]
async fn index_with_a_missing_child_is_manifest_unknown() {
    let app = App::new().await;
    let present = Image::oci("present");
    app.push_image("a", &present.digest(), &present).await;
    let absent = Image::oci("absent");
    let idx = index(
        OCI_INDEX,
        &[
            present.descriptor(Some(("linux", "arm64"))),
            absent.descriptor(Some(("linux", "amd64"))),
        ],
    );
    let r = app.put_manifest("a", "multi", OCI_INDEX, &idx).await;
    let err = r.assert_error(StatusCode::BAD_REQUEST, "MANIFEST_UNKNOWN");
    assert_eq!(err["detail"]["digest"], absent.digest().as_str());
}

#[tokio::test]
async fn descriptor_size_mismatch_is_manifest_invalid() {
    let app = App::new().await;
    let base = Image::oci("sizes");
    for blob in base.blobs() {
        app.push_blob("a", blob).await;
    }
    let wrong = Image::oci_with("sizes", |m| {
        let size = m["layers"][0]["size"].as_u64().expect("a size");
        m["layers"][0]["size"] = json!(size + 1);
    });
    app.put_manifest("a", "v1", OCI_MANIFEST, &wrong.manifest)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");

    // The same for a child descriptor of an index.
    let d = app
        .push_manifest("a", "v1", OCI_MANIFEST, &base.manifest)
        .await;
    let mut child = base.descriptor(Some(("linux", "amd64")));
    child["size"] = json!(base.manifest.len() - 1);
    assert_eq!(child["digest"], d.as_str());
    app.put_manifest("a", "multi", OCI_INDEX, &index(OCI_INDEX, &[child]))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
}

#[tokio::test]
async fn docker_schema1_is_refused_by_name() {
    let app = App::new().await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 1,
        "name": "a",
        "tag": "v1",
        "architecture": "amd64",
        "fsLayers": [{ "blobSum": sha256(b"x") }],
        "history": [{ "v1Compatibility": "{}" }],
        "signatures": [],
    }))
    .expect("JSON");
    for ct in [
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/json",
    ] {
        let r = app.put_manifest("a", "v1", ct, &body).await;
        let err = r.assert_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
        let msg = err["message"].as_str().expect("a message");
        assert!(msg.contains("schema 1"), "{ct}: {msg}");
    }
}

#[tokio::test]
async fn invalid_json_is_manifest_invalid() {
    let app = App::new().await;
    for body in [&b"{not json"[..], b"", b"[]", b"{\"schemaVersion\":2}"] {
        app.put_manifest("a", "v1", OCI_MANIFEST, body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    }
}

#[tokio::test]
async fn a_manifest_over_the_size_limit_is_413() {
    let app = App::with_config(|c| c.limits.manifest_max_size = bytesize::ByteSize::kib(1)).await;
    let small = Image::oci("small");
    assert!(small.manifest.len() < 1024);
    app.push_image("a", "small", &small).await;

    let big = Image::oci_with("big", |m| {
        m["annotations"] = json!({ "padding": "x".repeat(2000) });
    });
    for blob in big.blobs() {
        app.push_blob("a", blob).await;
    }
    let r = app
        .put_manifest("a", "big", OCI_MANIFEST, &big.manifest)
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.json()["errors"][0]["code"].is_string());

    // The same when the length is not announced.
    let r = app
        .call(
            req(Method::PUT, "/v2/a/manifests/big").header(header::CONTENT_TYPE, OCI_MANIFEST),
            streamed(&big.manifest, 100),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    app.get("/v2/a/manifests/big")
        .await
        .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn put_by_digest_of_other_bytes_is_digest_invalid() {
    let app = App::new().await;
    let image = Image::oci("mismatch");
    for blob in image.blobs() {
        app.push_blob("a", blob).await;
    }
    let claimed = sha256(b"other bytes");
    let r = app
        .put_manifest("a", &claimed, OCI_MANIFEST, &image.manifest)
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    for d in [claimed, image.digest()] {
        app.get(&format!("/v2/a/manifests/{d}"))
            .await
            .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    }
}

#[tokio::test]
async fn non_distributable_layers_with_urls_need_not_exist() {
    let app = App::new().await;
    for (seed, media_type, config_type, layer_type) in [
        (
            "docker foreign",
            DOCKER_MANIFEST,
            DOCKER_CONFIG,
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        ),
        (
            "oci nondist",
            OCI_MANIFEST,
            OCI_CONFIG,
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        ),
    ] {
        let config = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
        let foreign = data(seed, 1234);
        let mut layer = descriptor(layer_type, &foreign);
        layer["urls"] = json!(["https://example.invalid/layer.tar.gz"]);
        let manifest = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": descriptor(config_type, &config),
            "layers": [layer],
        }))
        .expect("JSON");
        app.push_blob("a", &config).await;
        app.push_manifest("a", "foreign", media_type, &manifest)
            .await;
    }
}

#[tokio::test]
async fn docker_schema2_manifest_and_list_are_accepted() {
    let app = App::new().await;
    let amd = Image::docker("amd");
    let arm = Image::docker("arm");
    let da = app.push_image("a", &amd.digest(), &amd).await;
    app.push_image("a", &arm.digest(), &arm).await;
    let list = index(
        DOCKER_LIST,
        &[
            amd.descriptor(Some(("linux", "amd64"))),
            arm.descriptor(Some(("linux", "arm64"))),
        ],
    );
    let dl = app.push_manifest("a", "multi", DOCKER_LIST, &list).await;

    let r = app.get_accept("/v2/a/manifests/multi", DOCKER_LIST).await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.header("content-type"), Some(DOCKER_LIST));
    assert_eq!(r.header("docker-content-digest"), Some(dl.as_str()));
    assert!(r.body == list);

    // A client that only reads schema 2 images gets the amd64 one.
    let r = app
        .get_accept("/v2/a/manifests/multi", DOCKER_MANIFEST)
        .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.header("content-type"), Some(DOCKER_MANIFEST));
    assert_eq!(r.header("docker-content-digest"), Some(da.as_str()));
    assert!(r.body == amd.manifest);
}

/// An OCI index `multi` of an arm64 and (when `with_amd64`) an amd64 image.
async fn push_index(app: &App, with_amd64: bool) -> (Vec<u8>, Image) {
    let amd = Image::oci("amd64 child");
    let arm = Image::oci("arm64 child");
    app.push_image("a", &amd.digest(), &amd).await;
    app.push_image("a", &arm.digest(), &arm).await;
    let mut children = vec![arm.descriptor(Some(("linux", "arm64")))];
    if with_amd64 {
        children.push(amd.descriptor(Some(("linux", "amd64"))));
    }
    let idx = index(OCI_INDEX, &children);
    app.push_manifest("a", "multi", OCI_INDEX, &idx).await;
    (idx, amd)
}

#[tokio::test]
async fn an_index_is_resolved_to_amd64_for_clients_that_cannot_read_it() {
    let app = App::new().await;
    let (_, amd) = push_index(&app, true).await;
    let r = app
        .get_accept("/v2/a/manifests/multi", IMAGE_TYPES_ONLY)
        .await;
    r.assert_status(StatusCode::OK);
    assert!(r.body == amd.manifest, "not the amd64 child");
    assert_eq!(
        r.header("docker-content-digest"),
        Some(amd.digest().as_str())
    );
    assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));

    let head = app
        .call(
            req(Method::HEAD, "/v2/a/manifests/multi").header(header::ACCEPT, IMAGE_TYPES_ONLY),
            Body::empty(),
        )
        .await;
    head.assert_status(StatusCode::OK);
    assert_eq!(head.stable_headers(), r.stable_headers());

    // Docker sends one Accept header per type, with parameters.
    let r = app
        .call(
            req(Method::GET, "/v2/a/manifests/multi")
                .header(header::ACCEPT, format!("{DOCKER_MANIFEST}; q=0.9"))
                .header(header::ACCEPT, OCI_MANIFEST),
            Body::empty(),
        )
        .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(amd.digest().as_str())
    );
}

#[tokio::test]
async fn an_index_is_served_as_is_without_accept_or_with_wildcards() {
    let app = App::new().await;
    let (idx, _) = push_index(&app, true).await;
    let d = sha256(&idx);
    for accept in [
        None,
        Some("*/*"),
        Some(OCI_INDEX),
        Some(&format!("{IMAGE_TYPES_ONLY}, {OCI_INDEX}")),
    ] {
        let r = match accept {
            None => app.get("/v2/a/manifests/multi").await,
            Some(a) => app.get_accept("/v2/a/manifests/multi", a).await,
        };
        r.assert_status(StatusCode::OK);
        assert!(r.body == idx, "Accept {accept:?}: not the index");
        assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
        assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    }
}

#[tokio::test]
async fn an_index_without_amd64_is_unknown_to_clients_that_cannot_read_it() {
    let app = App::new().await;
    push_index(&app, false).await;
    app.get_accept("/v2/a/manifests/multi", IMAGE_TYPES_ONLY)
        .await
        .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    app.get("/v2/a/manifests/multi")
        .await
        .assert_status(StatusCode::OK);
}

#[tokio::test]
async fn delete_by_tag_removes_only_the_tag() {
    let app = App::new().await;
    let image = Image::oci("untag");
    let d = app.push_image("a", "v1", &image).await;
    app.push_manifest("a", "v2", OCI_MANIFEST, &image.manifest)
        .await;

    app.delete("/v2/a/manifests/v1")
        .await
        .assert_status(StatusCode::ACCEPTED);
    app.get("/v2/a/manifests/v1")
        .await
        .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    app.delete("/v2/a/manifests/v1")
        .await
        .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    let r = app.get(&format!("/v2/a/manifests/{d}")).await;
    r.assert_status(StatusCode::OK);
    assert!(r.body == image.manifest);
    app.get("/v2/a/manifests/v2")
        .await
        .assert_status(StatusCode::OK);
    assert_eq!(
        app.get("/v2/a/tags/list").await.json()["tags"],
        json!(["v2"])
    );
}

#[tokio::test]
async fn delete_by_digest_removes_the_manifest_and_its_tags() {
    let app = App::new().await;
    let image = Image::oci("gone");
    let d = app.push_image("a", "v1", &image).await;
    app.push_manifest("a", "v2", OCI_MANIFEST, &image.manifest)
        .await;
    let keep = Image::oci("kept");
    app.push_image("a", "other", &keep).await;

    app.delete(&format!("/v2/a/manifests/{d}"))
        .await
        .assert_status(StatusCode::ACCEPTED);
    for reference in [d.as_str(), "v1", "v2"] {
        app.get(&format!("/v2/a/manifests/{reference}"))
            .await
            .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    }
    app.delete(&format!("/v2/a/manifests/{d}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    assert_eq!(
        app.get("/v2/a/tags/list").await.json()["tags"],
        json!(["other"])
    );
}

#[tokio::test]
async fn unknown_manifests_and_invalid_references_are_404() {
    let app = App::new().await;
    app.push_image("a", "v1", &Image::oci("exists")).await;
    let unknown_digest = sha256(b"no such manifest");
    let long_tag = "t".repeat(129);
    for reference in [
        "nope",
        unknown_digest.as_str(),
        ".bad",
        "-bad",
        long_tag.as_str(),
    ] {
        let uri = format!("/v2/a/manifests/{reference}");
        app.get(&uri)
            .await
            .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
        app.head(&uri).await.assert_status(StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn manifests_of_an_unknown_repository_are_name_unknown() {
    let app = App::new().await;
    let err = app
        .get("/v2/nope/manifests/latest")
        .await
        .assert_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    assert_eq!(err["detail"]["name"], "nope");
    app.get(&format!("/v2/nope/manifests/{}", sha256(b"x")))
        .await
        .assert_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    app.head("/v2/nope/manifests/latest")
        .await
        .assert_status(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn put_with_an_invalid_tag_is_400() {
    let app = App::new().await;
    let image = Image::oci("bad tag");
    for blob in image.blobs() {
        app.push_blob("a", blob).await;
    }
    for tag in [".bad", "-bad", &"t".repeat(129)] {
        let r = app
            .put_manifest("a", tag, OCI_MANIFEST, &image.manifest)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{tag}");
        let body: Value = r.json();
        assert!(body["errors"][0]["code"].is_string(), "{tag}: {body}");
    }
}
