mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn deleting_a_tag_gives_the_bytes_back() {
    let env = Env::new(test_config(Duration::ZERO)).await;
    let img = env
        .push_image("team/app", Some("v1"), &[b"layer-one", b"layer-two"])
        .await;
    assert_eq!(env.blob_files().len(), 3);
    let r = env
        .request(
            axum::http::Method::DELETE,
            "/v2/team/app/manifests/v1",
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::ACCEPTED);
    let report = env.gc().await;
    assert_eq!(report.deleted_manifests, 1, "{report:?}");
    assert_eq!(report.deleted_blobs, 3, "{report:?}");
    assert!(env.blob_files().is_empty(), "{:?}", env.blob_files());
    assert!(!env.has_manifest("team/app", &img.digest.to_string()).await);
}
