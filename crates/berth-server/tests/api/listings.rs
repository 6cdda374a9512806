//! `tags/list` and `_catalog`: bytewise order and `n`/`last` pagination with `Link`.

use axum::http::StatusCode;
use serde_json::json;

use crate::common::*;

/// Tags chosen so that bytewise, case-insensitive and numeric orders all differ.
const TAGS: &[&str] = &[
    "b", "B", "a", "A", "_x", "1", "10", "9", "a-b", "a.b", "a_b", "Z",
];

async fn tag_all(app: &App, tags: &[&str]) {
    let image = Image::oci("tags");
    app.push_image("a", tags[0], &image).await;
    for t in &tags[1..] {
        app.push_manifest("a", t, OCI_MANIFEST, &image.manifest)
            .await;
    }
}

fn bytewise(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort(); // String's Ord is bytewise
    v
}

/// Follows `Link` headers from `uri`, returning every page's items under `key`.
async fn follow(app: &App, uri: &str, key: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut uri = uri.to_owned();
    loop {
        let r = app.get(&uri).await;
        r.assert_status(StatusCode::OK);
        let items: Vec<String> =
            serde_json::from_value(r.json()[key].clone()).expect("a list of strings");
        pages.push(items);
        match r.next_link() {
            Some(next) => uri = path_of(&next).to_owned(),
            None => return pages,
        }
        assert!(pages.len() < 50, "the Link chain does not end");
    }
}

#[tokio::test]
async fn tags_are_listed_in_bytewise_order() {
    let app = App::new().await;
    tag_all(&app, TAGS).await;
    let r = app.get("/v2/a/tags/list").await;
    r.assert_status(StatusCode::OK);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    assert_eq!(r.header("link"), None);
    assert_eq!(r.json(), json!({ "name": "a", "tags": bytewise(TAGS) }));
}

#[tokio::test]
async fn tags_paginate_with_n_last_and_link() {
    let app = App::new().await;
    let tags = ["t1", "t2", "t3", "t4", "t5"];
    tag_all(&app, &tags).await;

    let pages = follow(&app, "/v2/a/tags/list?n=2", "tags").await;
    assert_eq!(pages, vec![vec!["t1", "t2"], vec!["t3", "t4"], vec!["t5"]]);

    // A Link exactly when more remain.
    let r = app.get("/v2/a/tags/list?n=5").await;
    assert_eq!(r.json()["tags"], json!(tags));
    assert_eq!(r.header("link"), None);
    let r = app.get("/v2/a/tags/list?n=4").await;
    let next = r.next_link().expect("a next link");
    assert!(next.starts_with("/v2/a/tags/list?"), "{next}");
    assert_eq!(app.get(&next).await.json()["tags"], json!(["t5"]));

    // `last` alone, and a `last` that is not a tag.
    let r = app.get("/v2/a/tags/list?last=t3").await;
    assert_eq!(r.json()["tags"], json!(["t4", "t5"]));
    assert_eq!(r.header("link"), None);
    let r = app.get("/v2/a/tags/list?n=1&last=t25").await;
    assert_eq!(r.json()["tags"], json!(["t3"]));
    assert!(r.next_link().is_some());
    let r = app.get("/v2/a/tags/list?last=t5").await;
    assert_eq!(r.json()["tags"], json!([]));
    assert_eq!(r.header("link"), None);
}

/// `n=0` asks for nothing: an empty page, and no `Link`, which could only point at this same
/// empty page again (a client following it would loop). Distribution answers the same way.
#[tokio::test]
async fn n_zero_is_an_empty_page_without_link() {
    let app = App::new().await;
    tag_all(&app, &["t1", "t2"]).await;
    let r = app.get("/v2/a/tags/list?n=0").await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.json(), json!({ "name": "a", "tags": [] }));
    assert_eq!(r.header("link"), None, "tags/list?n=0");

    let r = app.get("/v2/_catalog?n=0").await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.json(), json!({ "repositories": [] }));
    assert_eq!(r.header("link"), None, "_catalog?n=0");
}

#[tokio::test]
async fn an_invalid_n_is_pagination_number_invalid() {
    let app = App::new().await;
    tag_all(&app, &["t1"]).await;
    for n in ["abc", "-1", "1.5", "99999999999999999999"] {
        app.get(&format!("/v2/a/tags/list?n={n}"))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID");
        app.get(&format!("/v2/_catalog?n={n}"))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID");
    }
}

#[tokio::test]
async fn page_max_entries_caps_n() {
    let app = App::with_config(|c| c.limits.page_max_entries = 2).await;
    tag_all(&app, &["t1", "t2", "t3"]).await;
    for uri in ["/v2/a/tags/list", "/v2/a/tags/list?n=100"] {
        let r = app.get(uri).await;
        assert_eq!(r.json()["tags"], json!(["t1", "t2"]), "{uri}");
        let next = r.next_link().expect("a next link");
        let r = app.get(path_of(&next)).await;
        assert_eq!(r.json()["tags"], json!(["t3"]), "{uri} page 2");
        assert_eq!(r.header("link"), None);
    }
    for repo in ["b", "c"] {
        app.push_blob(repo, b"x").await;
    }
    let pages = follow(&app, "/v2/_catalog?n=10", "repositories").await;
    assert_eq!(pages, vec![vec!["a", "b"], vec!["c"]]);
}

#[tokio::test]
async fn tags_of_an_unknown_repository_are_name_unknown() {
    let app = App::new().await;
    let err = app
        .get("/v2/nope/tags/list")
        .await
        .assert_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    assert_eq!(err["detail"]["name"], "nope");
}

/// Repository names whose bytewise order differs from a per-component or natural order.
const REPOS: &[&str] = &["ab", "a_b", "a0", "a/b", "a.b", "a-b", "a", "b/a", "a/b/c"];

#[tokio::test]
async fn catalog_lists_repositories_in_bytewise_order() {
    let app = App::new().await;
    for repo in REPOS {
        app.push_blob(repo, b"content").await;
    }
    let r = app.get("/v2/_catalog").await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.header("link"), None);
    assert_eq!(r.json(), json!({ "repositories": bytewise(REPOS) }));
}

#[tokio::test]
async fn catalog_paginates_with_n_last_and_link() {
    let app = App::new().await;
    for repo in REPOS {
        app.push_blob(repo, b"content").await;
    }
    let all = bytewise(REPOS);

    let pages = follow(&app, "/v2/_catalog?n=4", "repositories").await;
    assert_eq!(pages.len(), 3);
    assert_eq!(pages.concat(), all);
    assert!(pages[..2].iter().all(|p| p.len() == 4));

    let r = app.get(&format!("/v2/_catalog?n={}", all.len())).await;
    assert_eq!(r.json()["repositories"], json!(all));
    assert_eq!(r.header("link"), None);

    let r = app.get("/v2/_catalog?n=2&last=a/b").await;
    assert_eq!(r.json()["repositories"], json!(all[4..6]));
    let next = r.next_link().expect("a next link");
    assert!(next.starts_with("/v2/_catalog?"), "{next}");
}

#[tokio::test]
async fn an_empty_registry_has_an_empty_catalog() {
    let app = App::new().await;
    let r = app.get("/v2/_catalog").await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.json(), json!({ "repositories": [] }));
}
