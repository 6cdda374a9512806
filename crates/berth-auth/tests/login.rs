//! Logins under load, against the real MetaStore and real argon2: regression tests of the
//! security review's findings 4, 7 and 8 (issue 15). New settings are given as JSON so that a
//! setting that did not exist yet failed the test by being refused.

use std::net::IpAddr;
use std::sync::Arc;

use berth_auth::{Auth, AuthError};
use berth_core::config::AuthConfig;
use berth_meta::MetaStore;

async fn auth(config: serde_json::Value) -> (tempfile::TempDir, Arc<Auth>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let meta = MetaStore::open_for_tests(dir.path())
        .await
        .expect("the database opens");
    let config: AuthConfig = serde_json::from_value(config).expect("a valid auth configuration");
    let auth = Auth::new(meta, config)
        .await
        .expect("the auth service starts");
    (dir, Arc::new(auth))
}

async fn add_user(auth: &Auth, name: &str, password: &str) {
    let hash = auth.hashing.hash(password).await.expect("hashing works");
    auth.meta
        .create_user(name, Some(&hash), "local", false)
        .await
        .expect("the user is created");
}

fn addr(i: u32) -> IpAddr {
    IpAddr::from([10, 1, (i >> 8) as u8, i as u8])
}

/// Finding 4: 16 parallel logins with the right password on a cold credential cache gave
/// 5 x 200 and 11 x 429 (each counted as an attempt before its check). Only failures count,
/// and concurrent checks of the same credentials share one verification.
#[tokio::test]
async fn parallel_logins_with_the_right_password_all_pass() {
    let (_dir, auth) = auth(serde_json::json!({})).await;
    add_user(&auth, "ci", "the right password").await;
    let before = auth.hashing.verifications();
    let source = addr(1);
    let logins: Vec<_> = (0..16)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.authenticate("ci", "the right password", source).await })
        })
        .collect();
    for l in logins {
        let r = l.await.expect("the login task ends");
        assert!(r.is_ok(), "a correct login was refused: {:?}", r.err());
    }
    assert_eq!(
        auth.hashing.verifications() - before,
        1,
        "16 concurrent checks of the same credentials share one verification"
    );
    // Wrong passwords still lock the pair after max_failures.
    for _ in 0..5 {
        assert!(matches!(
            auth.authenticate("ci", "wrong", source).await,
            Err(AuthError::Invalid)
        ));
    }
    assert!(matches!(
        auth.authenticate("ci", "wrong", source).await,
        Err(AuthError::Throttled(_))
    ));
}

/// Finding 7: an unknown user answered in 2.3 ms against 39 ms for a wrong password, so
/// names could be enumerated by timing. Every password check of a name without a local
/// password costs one argon2 verification, like a real one.
#[tokio::test]
async fn unknown_users_cost_one_verification_like_known_ones() {
    let (_dir, auth) = auth(serde_json::json!({})).await;
    add_user(&auth, "alice", "alice's password").await;
    let before = auth.hashing.verifications();
    assert!(matches!(
        auth.authenticate("alice", "wrong", addr(2)).await,
        Err(AuthError::Invalid)
    ));
    assert_eq!(auth.hashing.verifications() - before, 1);
    let before = auth.hashing.verifications();
    assert!(matches!(
        auth.authenticate("nobody", "wrong", addr(2)).await,
        Err(AuthError::Invalid)
    ));
    assert_eq!(
        auth.hashing.verifications() - before,
        1,
        "an unknown user must cost the same argon2 verification"
    );
}

/// Finding 8: wrong guesses from many addresses filled the argon2 queue and delayed a real
/// first login by seconds. The queue is bounded (`auth.hash_queue`): beyond it the oldest
/// waiting attempts are shed (`Busy`), and credentials verified before skip it entirely.
#[tokio::test]
async fn the_password_queue_is_bounded_and_sheds_the_oldest() {
    let (_dir, auth) = auth(serde_json::json!({ "hash_concurrency": 1, "hash_queue": 4 })).await;
    add_user(&auth, "real", "the real password").await;
    for i in 0..40 {
        add_user(&auth, &format!("victim{i}"), "unguessable password").await;
    }
    // A login verified before the flood (after the last account change, which empties the
    // credential cache) is cached and never waits.
    auth.authenticate("real", "the real password", addr(500))
        .await
        .expect("the real user signs in");
    let before = auth.hashing.verifications();
    let flood: Vec<_> = (0..40u32)
        .map(|i| {
            let auth = auth.clone();
            tokio::spawn(async move {
                auth.authenticate(&format!("victim{i}"), "guess", addr(i))
                    .await
            })
        })
        .collect();
    // The flood is queued now (the tasks start at once on the test runtime's threads).
    tokio::task::yield_now().await;
    auth.authenticate("real", "the real password", addr(500))
        .await
        .expect("cached credentials skip the queue");
    let mut shed = 0;
    let mut refused = 0;
    for f in flood {
        match f.await.expect("the login task ends") {
            Err(AuthError::Busy) => shed += 1,
            Err(AuthError::Invalid) => refused += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(shed + refused, 40);
    assert!(shed > 0, "nothing was shed with 40 attempts and room for 5");
    assert_eq!(
        auth.hashing.verifications() - before,
        refused,
        "every refused attempt was verified, no shed one was"
    );
}
