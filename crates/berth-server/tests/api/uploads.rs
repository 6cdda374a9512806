//! Blob upload sessions: monolithic, single-PATCH, chunked and resumed uploads, their error
//! cases, other digest algorithms, and concurrent requests on one session.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use bytes::Bytes;

use crate::common::*;

/// Fetches a blob and asserts it has exactly `data`.
async fn assert_blob(app: &App, repo: &str, digest: &str, data: &[u8]) {
    let r = app.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.header("docker-content-digest"), Some(digest));
    assert!(r.body == data, "blob {digest} has other bytes");
}

async fn put_digest(app: &App, session: &str, digest: &str) -> Resp {
    app.call(
        req(
            Method::PUT,
            &with_query(session, &format!("digest={digest}")),
        ),
        Body::empty(),
    )
    .await
}

async fn patch_range(app: &App, session: &str, range: &str, data: &[u8]) -> Resp {
    app.call(
        req(Method::PATCH, session).header("content-range", range),
        data.to_vec(),
    )
    .await
}

#[tokio::test]
async fn post_then_one_streamed_patch_then_put() {
    let app = App::new().await;
    let data = data("streamed", 300_000);
    let d = sha256(&data);

    let r = app
        .call(req(Method::POST, "/v2/a/blobs/uploads/"), Body::empty())
        .await;
    r.assert_status(StatusCode::ACCEPTED);
    let session = r.location();
    let id = session.rsplit('/').next().expect("an id");
    assert_eq!(r.header("docker-upload-uuid"), Some(id));
    assert_eq!(r.header("range"), Some("0-0"));

    // No Content-Range and no Content-Length: the whole stream is the chunk.
    let r = app
        .call(req(Method::PATCH, &session), streamed(&data, 7000))
        .await;
    r.assert_status(StatusCode::ACCEPTED);
    assert_eq!(r.header("range"), Some("0-299999"));
    assert_eq!(r.header("docker-upload-uuid"), Some(id));
    let session = r.location();

    let r = put_digest(&app, &session, &d).await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(r.location(), format!("/v2/a/blobs/{d}"));
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_blob(&app, "a", &d, &data).await;

    // A completed session is gone.
    app.get(&session)
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    patch_range(&app, &session, "300000-300001", b"xx")
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn post_then_put_with_the_whole_body() {
    let app = App::new().await;
    let data = data("whole", 70_000);
    let d = sha256(&data);
    let session = app.start_upload("a").await;
    let r = app
        .call(
            req(Method::PUT, &with_query(&session, &format!("digest={d}"))),
            data.clone(),
        )
        .await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_blob(&app, "a", &d, &data).await;
}

#[tokio::test]
async fn monolithic_post_with_digest() {
    let app = App::new().await;
    let data = data("mono", 10_000);
    let d = sha256(&data);
    let r = app
        .call(
            req(Method::POST, &format!("/v2/a/blobs/uploads/?digest={d}")),
            data.clone(),
        )
        .await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(r.location(), format!("/v2/a/blobs/{d}"));
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_blob(&app, "a", &d, &data).await;

    // The same with a streamed body of unknown length.
    let data2 = self::data("mono streamed", 10_000);
    let d2 = sha256(&data2);
    let r = app
        .call(
            req(Method::POST, &format!("/v2/a/blobs/uploads/?digest={d2}")),
            streamed(&data2, 999),
        )
        .await;
    r.assert_status(StatusCode::CREATED);
    assert_blob(&app, "a", &d2, &data2).await;
}

#[tokio::test]
async fn monolithic_post_with_a_wrong_digest_stores_nothing() {
    let app = App::new().await;
    let wrong = sha256(b"something else");
    let r = app
        .call(
            req(
                Method::POST,
                &format!("/v2/a/blobs/uploads/?digest={wrong}"),
            ),
            b"the bytes".to_vec(),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    app.head(&format!("/v2/a/blobs/{wrong}"))
        .await
        .assert_status(StatusCode::NOT_FOUND);
    app.head(&format!("/v2/a/blobs/{}", sha256(b"the bytes")))
        .await
        .assert_status(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn chunked_patches_with_content_range() {
    let app = App::new().await;
    let data = data("chunked", 30);
    let d = sha256(&data);
    let session = app.start_upload("a").await;

    let r = patch_range(&app, &session, "0-9", &data[..10]).await;
    r.assert_status(StatusCode::ACCEPTED);
    assert_eq!(r.header("range"), Some("0-9"));
    let r = patch_range(&app, &r.location(), "10-19", &data[10..20]).await;
    r.assert_status(StatusCode::ACCEPTED);
    assert_eq!(r.header("range"), Some("0-19"));

    // A PATCH without Content-Range appends at the current offset.
    let r = app
        .call(
            req(Method::PATCH, &r.location()),
            streamed(&data[20..25], 2),
        )
        .await;
    r.assert_status(StatusCode::ACCEPTED);
    assert_eq!(r.header("range"), Some("0-24"));

    // The last chunk travels with the PUT.
    let r = app
        .call(
            req(
                Method::PUT,
                &with_query(&r.location(), &format!("digest={d}")),
            )
            .header("content-range", "25-29"),
            data[25..].to_vec(),
        )
        .await;
    r.assert_status(StatusCode::CREATED);
    assert_blob(&app, "a", &d, &data).await;
}

#[tokio::test]
async fn out_of_order_chunk_is_416_with_the_current_offset() {
    let app = App::new().await;
    let data = data("ooo", 30);
    let session = app.start_upload("a").await;
    patch_range(&app, &session, "0-9", &data[..10])
        .await
        .assert_status(StatusCode::ACCEPTED);

    for range in ["20-29", "0-9", "5-14", "11-20"] {
        let (a, b) = range.split_once('-').expect("a range");
        let (a, b): (usize, usize) = (a.parse().expect("n"), b.parse().expect("n"));
        let r = patch_range(&app, &session, range, &data[a..=b]).await;
        r.assert_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
        assert_eq!(r.header("range"), Some("0-9"), "after {range}");
        assert_eq!(r.location(), session, "after {range}");
    }

    // The session is intact and continues where it was.
    patch_range(&app, &session, "10-29", &data[10..])
        .await
        .assert_status(StatusCode::ACCEPTED);
    put_digest(&app, &session, &sha256(&data))
        .await
        .assert_status(StatusCode::CREATED);
    assert_blob(&app, "a", &sha256(&data), &data).await;
}

#[tokio::test]
async fn content_length_not_matching_content_range_is_400_size_invalid() {
    let app = App::new().await;
    let session = app.start_upload("a").await;
    let r = app
        .call(
            req(Method::PATCH, &session)
                .header("content-range", "0-9")
                .header("content-length", "5"),
            b"12345".to_vec(),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");

    // Nothing was recorded.
    let r = app.get(&session).await;
    r.assert_status(StatusCode::NO_CONTENT);
    assert_eq!(r.header("range"), Some("0-0"));
}

#[tokio::test]
async fn a_body_shorter_than_its_content_range_is_not_recorded() {
    let app = App::new().await;
    let data = data("short body", 10);
    let session = app.start_upload("a").await;
    let r = app
        .call(
            req(Method::PATCH, &session).header("content-range", "0-9"),
            streamed(&data[..5], 2),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
    let r = app.get(&session).await;
    r.assert_status(StatusCode::NO_CONTENT);
    assert_eq!(r.header("range"), Some("0-0"));

    // The stray bytes do not survive into the retried chunk.
    patch_range(&app, &session, "0-9", &data)
        .await
        .assert_status(StatusCode::ACCEPTED);
    put_digest(&app, &session, &sha256(&data))
        .await
        .assert_status(StatusCode::CREATED);
    assert_blob(&app, "a", &sha256(&data), &data).await;
}

#[tokio::test]
async fn a_body_longer_than_its_content_length_is_refused() {
    let app = App::new().await;
    let data = data("long body", 20);
    let session = app.start_upload("a").await;
    let r = app
        .call(
            req(Method::PATCH, &session).header("content-length", "10"),
            streamed(&data, 4),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
    let r = app.get(&session).await;
    assert_eq!(r.header("range"), Some("0-0"));

    let d = sha256(&data[..10]);
    let r = app
        .call(
            req(Method::POST, &format!("/v2/a/blobs/uploads/?digest={d}"))
                .header("content-length", "10"),
            streamed(&data, 4),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
    app.head(&format!("/v2/a/blobs/{d}"))
        .await
        .assert_status(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_final_chunk_at_the_wrong_offset_is_416() {
    let app = App::new().await;
    let data = data("final chunk", 20);
    let session = app.start_upload("a").await;
    patch_range(&app, &session, "0-9", &data[..10])
        .await
        .assert_status(StatusCode::ACCEPTED);
    let r = app
        .call(
            req(
                Method::PUT,
                &with_query(&session, &format!("digest={}", sha256(&data))),
            )
            .header("content-range", "11-19"),
            data[11..].to_vec(),
        )
        .await;
    r.assert_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    assert_eq!(r.header("range"), Some("0-9"));
    assert_eq!(r.location(), session);
}

#[tokio::test]
async fn upload_status_is_204_with_range() {
    let app = App::new().await;
    let session = app.start_upload("a").await;
    let id = session.rsplit('/').next().expect("an id").to_owned();

    let r = app.get(&session).await;
    r.assert_status(StatusCode::NO_CONTENT);
    assert_eq!(r.header("range"), Some("0-0"));
    assert_eq!(r.location(), session);
    assert_eq!(r.header("docker-upload-uuid"), Some(id.as_str()));
    assert!(r.body.is_empty());

    patch_range(&app, &session, "0-41", &data("status", 42))
        .await
        .assert_status(StatusCode::ACCEPTED);
    let r = app.get(&session).await;
    r.assert_status(StatusCode::NO_CONTENT);
    assert_eq!(r.header("range"), Some("0-41"));
}

#[tokio::test]
async fn deleted_upload_is_unknown() {
    let app = App::new().await;
    let session = app.start_upload("a").await;
    patch_range(&app, &session, "0-2", b"abc")
        .await
        .assert_status(StatusCode::ACCEPTED);

    let r = app.delete(&session).await;
    r.assert_status(StatusCode::NO_CONTENT);

    app.get(&session)
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    patch_range(&app, &session, "3-5", b"def")
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    put_digest(&app, &session, &sha256(b"abc"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    app.delete(&session)
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn malformed_upload_id_is_unknown() {
    let app = App::new().await;
    app.start_upload("a").await;
    app.get("/v2/a/blobs/uploads/not-a-session")
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    patch_range(&app, "/v2/a/blobs/uploads/..", "0-2", b"abc")
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn put_with_a_wrong_digest_stores_nothing_and_ends_the_session() {
    let app = App::new().await;
    let data = data("wrong", 5000);
    let wrong = sha256(b"not these bytes");
    let session = app.start_upload("a").await;
    app.call(req(Method::PATCH, &session), data.clone())
        .await
        .assert_status(StatusCode::ACCEPTED);

    let r = put_digest(&app, &session, &wrong).await;
    let err = r.assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    assert_eq!(err["detail"]["digest"], wrong.as_str());

    for d in [&wrong, &sha256(&data)] {
        app.get(&format!("/v2/a/blobs/{d}"))
            .await
            .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    }
    app.get(&session)
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    // Retrying with the right digest does not resurrect it either.
    put_digest(&app, &session, &sha256(&data))
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn put_without_digest_or_with_a_malformed_one_is_400() {
    let app = App::new().await;
    let session = app.start_upload("a").await;
    app.call(req(Method::PUT, &session), b"abc".to_vec())
        .await
        .assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    put_digest(&app, &session, "sha256:nothex")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
}

#[tokio::test]
async fn sha512_upload_with_digest_algorithm() {
    let app = App::new().await;
    let data = data("sha512 declared", 50_000);
    let d = sha512(&data);
    let r = app
        .call(
            req(Method::POST, "/v2/a/blobs/uploads/?digest-algorithm=sha512"),
            Body::empty(),
        )
        .await;
    r.assert_status(StatusCode::ACCEPTED);
    let session = r.location();
    app.call(req(Method::PATCH, &session), streamed(&data, 4096))
        .await
        .assert_status(StatusCode::ACCEPTED);
    let r = put_digest(&app, &session, &d).await;
    r.assert_status(StatusCode::CREATED);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(r.location(), format!("/v2/a/blobs/{d}"));
    assert_blob(&app, "a", &d, &data).await;
}

#[tokio::test]
async fn sha512_upload_without_digest_algorithm() {
    let app = App::new().await;
    let data = data("sha512 late", 50_000);
    let d = sha512(&data);
    let session = app.start_upload("a").await;
    patch_range(&app, &session, "0-29999", &data[..30_000])
        .await
        .assert_status(StatusCode::ACCEPTED);
    app.call(
        req(Method::PUT, &with_query(&session, &format!("digest={d}")))
            .header("content-range", "30000-49999"),
        data[30_000..].to_vec(),
    )
    .await
    .assert_status(StatusCode::CREATED);
    assert_blob(&app, "a", &d, &data).await;

    // A sha512 monolithic upload, and a sha512 digest that does not match.
    let small = b"sha512 mono".to_vec();
    app.call(
        req(
            Method::POST,
            &format!("/v2/a/blobs/uploads/?digest={}", sha512(&small)),
        ),
        small.clone(),
    )
    .await
    .assert_status(StatusCode::CREATED);
    assert_blob(&app, "a", &sha512(&small), &small).await;
    let session = app.start_upload("a").await;
    app.call(
        req(
            Method::PUT,
            &with_query(&session, &format!("digest={}", sha512(b"other"))),
        ),
        small,
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
}

#[tokio::test]
async fn unsupported_digest_algorithm_is_refused() {
    let app = App::new().await;
    app.call(
        req(Method::POST, "/v2/a/blobs/uploads/?digest-algorithm=md5"),
        Body::empty(),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
}

#[tokio::test]
async fn a_session_is_unknown_through_another_repository() {
    let app = App::new().await;
    app.push_blob("b", b"b exists").await;
    let session = app.start_upload("a").await;
    let id = session.rsplit('/').next().expect("an id");
    let foreign = format!("/v2/b/blobs/uploads/{id}");

    patch_range(&app, &foreign, "0-2", b"abc")
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    app.get(&foreign)
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    put_digest(&app, &foreign, &sha256(b""))
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    app.delete(&foreign)
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    // Through a repository that does not exist at all, too.
    patch_range(&app, &format!("/v2/c/blobs/uploads/{id}"), "0-2", b"abc")
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");

    // None of that touched the session.
    let r = app.get(&session).await;
    r.assert_status(StatusCode::NO_CONTENT);
    assert_eq!(r.header("range"), Some("0-0"));
}

#[tokio::test]
async fn concurrent_patches_on_one_session_one_wins() {
    let app = App::new().await;
    let session = app.start_upload("a").await;
    let (first_half, second_half) = (data("first", 40_000), data("second", 25_000));

    let (held, body) = HeldBody::new();
    let first = app.spawn(req(Method::PATCH, &session).body(body).expect("a request"));
    held.chunks
        .send(Bytes::from(first_half.clone()))
        .await
        .expect("the server reads the body");
    held.reading.await.expect("the first PATCH is in flight");

    // While the first request holds the session, a second one loses.
    let r = app
        .call(req(Method::PATCH, &session), b"intruder".to_vec())
        .await;
    r.assert_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    assert_eq!(r.header("range"), Some("0-0"));
    assert_eq!(r.location(), session);

    held.chunks
        .send(Bytes::from(second_half.clone()))
        .await
        .expect("the server reads the body");
    drop(held.chunks);
    let r = first.await.expect("the first PATCH completes");
    r.assert_status(StatusCode::ACCEPTED);
    assert_eq!(r.header("range"), Some("0-64999"));

    let whole = [first_half, second_half].concat();
    put_digest(&app, &session, &sha256(&whole))
        .await
        .assert_status(StatusCode::CREATED);
    assert_blob(&app, "a", &sha256(&whole), &whole).await;
}

#[tokio::test]
async fn put_while_a_patch_is_in_flight_is_416() {
    let app = App::new().await;
    let session = app.start_upload("a").await;
    let data = data("in flight", 10_000);

    let (held, body) = HeldBody::new();
    let first = app.spawn(req(Method::PATCH, &session).body(body).expect("a request"));
    held.chunks
        .send(Bytes::from(data[..4000].to_vec()))
        .await
        .expect("the server reads the body");
    held.reading.await.expect("the PATCH is in flight");

    let r = put_digest(&app, &session, &sha256(&data[..4000])).await;
    r.assert_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    assert_eq!(r.header("range"), Some("0-0"));

    held.chunks
        .send(Bytes::from(data[4000..].to_vec()))
        .await
        .expect("the server reads the body");
    drop(held.chunks);
    first
        .await
        .expect("the PATCH completes")
        .assert_status(StatusCode::ACCEPTED);
    put_digest(&app, &session, &sha256(&data))
        .await
        .assert_status(StatusCode::CREATED);
    assert_blob(&app, "a", &sha256(&data), &data).await;
}

#[tokio::test]
async fn empty_blob_upload() {
    let app = App::new().await;
    let d = sha256(b"");
    let session = app.start_upload("a").await;
    put_digest(&app, &session, &d)
        .await
        .assert_status(StatusCode::CREATED);
    let r = app.get(&format!("/v2/a/blobs/{d}")).await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.header("content-length"), Some("0"));
    assert!(r.body.is_empty());
}
