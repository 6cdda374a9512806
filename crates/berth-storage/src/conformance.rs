//! The behaviours every BlobStore backend must have, written once and run per backend.

use std::io;

use berth_core::{Algorithm, Digest, Digester};
use bytes::Bytes;
use futures_util::{StreamExt, stream};

use crate::{BlobKey, BlobStore, ByteStream, StorageErrorKind, UploadId, WriteError};

fn body(chunks: Vec<&'static [u8]>) -> ByteStream {
    Box::pin(stream::iter(
        chunks.into_iter().map(|c| Ok(Bytes::from_static(c))),
    ))
}

async fn read_all(store: &dyn BlobStore, key: &BlobKey, offset: u64, len: u64) -> Vec<u8> {
    let mut s = store.read_blob(key, offset, len).await.unwrap();
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

pub async fn run_all(store: &dyn BlobStore) {
    chunked_upload_commits_and_reads(store).await;
    failed_append_leaves_previous_offset(store).await;
    too_long_body_is_refused(store).await;
    deletes_are_idempotent(store).await;
    append_at_an_earlier_offset_truncates(store).await;
    whole_upload_commits_and_reads(store).await;
}

/// A single-request upload: written whole, then committed; two blobs of one digest prefix
/// share directories on the filesystem.
async fn whole_upload_commits_and_reads(store: &dyn BlobStore) {
    let mut keys = Vec::new();
    for data in [&b"whole upload one"[..], &b"whole upload two"[..]] {
        let id = UploadId::new();
        store.create_upload(&id).await.unwrap();
        let mut d = Digester::new(Algorithm::Sha256);
        let n = store
            .write_whole_upload(
                &id,
                Box::pin(stream::iter([Ok(Bytes::copy_from_slice(data))])),
                &mut d,
                Some(data.len() as u64),
            )
            .await
            .unwrap();
        assert_eq!(n, data.len() as u64);
        let digest = d.finish();
        assert_eq!(digest, Digest::sha256_of(data));
        let key = BlobKey::from_upload(digest, &id);
        store.commit_upload(&id, n, &key).await.unwrap();
        keys.push((key, data));
    }
    for (key, data) in keys {
        assert_eq!(read_all(store, &key, 0, data.len() as u64).await, data);
        store.delete_blob(&key).await.unwrap();
    }
}

async fn chunked_upload_commits_and_reads(store: &dyn BlobStore) {
    let id = UploadId::new();
    store.create_upload(&id).await.unwrap();
    let mut d = Digester::new(Algorithm::Sha256);
    let n1 = store
        .append_upload(&id, 0, body(vec![b"hello ", b"wor"]), &mut d, None)
        .await
        .unwrap();
    assert_eq!(n1, 9);
    // The second request restores the hash from exported state, as another node would.
    let mut d2 = Digester::restore(&d.export()).unwrap();
    let n2 = store
        .append_upload(&id, 9, body(vec![b"ld"]), &mut d2, None)
        .await
        .unwrap();
    assert_eq!(n2, 2);
    let digest = d2.finish();
    assert_eq!(digest, Digest::sha256_of(b"hello world"));
    let mut staged = Vec::new();
    let mut s = store.read_upload(&id, 11).await.unwrap();
    while let Some(c) = s.next().await {
        staged.extend_from_slice(&c.unwrap());
    }
    assert_eq!(staged, b"hello world");
    let key = BlobKey::from_upload(digest, &id);
    store.commit_upload(&id, 11, &key).await.unwrap();
    assert_eq!(store.blob_size(&key).await.unwrap(), 11);
    let listed = store.list_blobs().await.unwrap();
    assert!(
        listed.iter().any(|o| o.key == key && o.size == 11),
        "{listed:?}"
    );
    assert!(
        store
            .list_uploads()
            .await
            .unwrap()
            .iter()
            .all(|o| o.key != id),
        "a committed upload is no longer staged"
    );
    assert_eq!(read_all(store, &key, 0, 11).await, b"hello world");
    assert_eq!(read_all(store, &key, 6, 3).await, b"wor");
    store.delete_blob(&key).await.unwrap();
    let err = store
        .read_blob(&key, 0, 1)
        .await
        .err()
        .expect("deleted blob must not read");
    assert_eq!(err.kind, StorageErrorKind::NotFound);
}

async fn failed_append_leaves_previous_offset(store: &dyn BlobStore) {
    let id = UploadId::new();
    store.create_upload(&id).await.unwrap();
    let mut d = Digester::new(Algorithm::Sha256);
    store
        .append_upload(&id, 0, body(vec![b"abc"]), &mut d, None)
        .await
        .unwrap();
    let saved = d.export();
    let broken: ByteStream = Box::pin(stream::iter(vec![
        Ok(Bytes::from_static(b"garbage")),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ]));
    let mut scratch = Digester::restore(&saved).unwrap();
    let err = store
        .append_upload(&id, 3, broken, &mut scratch, None)
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Body(_)), "{err}");
    // Resume at the recorded offset with the recorded hash: the garbage is gone.
    let mut d = Digester::restore(&saved).unwrap();
    store
        .append_upload(&id, 3, body(vec![b"def"]), &mut d, None)
        .await
        .unwrap();
    let digest = d.finish();
    assert_eq!(digest, Digest::sha256_of(b"abcdef"));
    let key = BlobKey::from_upload(digest, &id);
    store.commit_upload(&id, 6, &key).await.unwrap();
    assert_eq!(read_all(store, &key, 0, 6).await, b"abcdef");
    store.delete_blob(&key).await.unwrap();
}

async fn too_long_body_is_refused(store: &dyn BlobStore) {
    let id = UploadId::new();
    store.create_upload(&id).await.unwrap();
    let mut d = Digester::new(Algorithm::Sha256);
    let err = store
        .append_upload(&id, 0, body(vec![b"12345"]), &mut d, Some(4))
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::TooLong(4)));
    store.delete_upload(&id).await.unwrap();
}

async fn deletes_are_idempotent(store: &dyn BlobStore) {
    let id = UploadId::new();
    store.create_upload(&id).await.unwrap();
    assert!(
        store
            .list_uploads()
            .await
            .unwrap()
            .iter()
            .any(|o| o.key == id)
    );
    store.delete_upload(&id).await.unwrap();
    store.delete_upload(&id).await.unwrap();
    let key = BlobKey::from_upload(Digest::sha256_of(b"x"), &id);
    store.delete_blob(&key).await.unwrap();
}

async fn append_at_an_earlier_offset_truncates(store: &dyn BlobStore) {
    let id = UploadId::new();
    store.create_upload(&id).await.unwrap();
    let mut d = Digester::new(Algorithm::Sha256);
    store
        .append_upload(&id, 0, body(vec![b"abcdefgh"]), &mut d, None)
        .await
        .unwrap();
    // The recorded offset is 3 (the rest was never committed by the caller).
    let mut d = Digester::new(Algorithm::Sha256);
    d.update(b"abc");
    store
        .append_upload(&id, 3, body(vec![b"XY"]), &mut d, None)
        .await
        .unwrap();
    let digest = d.finish();
    assert_eq!(digest, Digest::sha256_of(b"abcXY"));
    let key = BlobKey::from_upload(digest, &id);
    store.commit_upload(&id, 5, &key).await.unwrap();
    assert_eq!(store.blob_size(&key).await.unwrap(), 5);
    assert_eq!(read_all(store, &key, 0, 5).await, b"abcXY");
    store.delete_blob(&key).await.unwrap();
}

#[tokio::test]
async fn filesystem_backend() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::FsBlobStore::open(dir.path()).unwrap();
    run_all(&store).await;
}

/// Needs an S3 endpoint in S3_TEST_ENDPOINT (scripts/s3-test-server.sh starts one).
#[cfg(feature = "s3")]
#[tokio::test]
async fn s3_backend() {
    let Some(store) = crate::s3::test_store(crate::S3_DEFAULT_PART_SIZE) else {
        return;
    };
    run_all(&store).await;
}

/// The same with 4-byte parts, so every upload is staged as several chunk objects, appends
/// rewind into the middle of a chunk, and commits take the multipart path.
#[cfg(feature = "s3")]
#[tokio::test]
async fn s3_backend_tiny_parts() {
    let Some(store) = crate::s3::test_store(4) else {
        return;
    };
    run_all(&store).await;
}
