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

/// What a flood of wrong passwords and the first logins made during it got.
struct FloodOutcome {
    /// Per real user: the attempts it made and whether the last one let it in.
    logins: Vec<(String, usize, Result<(), AuthError>)>,
    /// The flood's answers: refused as wrong, shed from the queue, throttled.
    invalid: usize,
    busy: usize,
    throttled: usize,
}

/// The benchmark's "limits" scenario, logins row (docs/benchmarks.md), made small: 100
/// addresses each keep one wrong password in flight (a new one each time, names rotating),
/// pausing 10 ms after each answer, while four users log in for the first time from fresh
/// addresses, one every 400 ms from 300 ms into the flood, each retrying 100 ms after a
/// `Busy` or `Throttled` for up to 3 s. The flood ends when the last of them is done.
///
/// The users arrive more slowly than the checks are made (a few a second here, in a debug
/// build on a busy machine), as in the benchmark (one every 1.8 s against 19 checks a
/// second): first logins arriving faster than that would shed one another.
async fn first_logins_during_a_flood(config: serde_json::Value) -> FloodOutcome {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    const FLOODERS: u32 = 100;
    const USERS: u32 = 4;
    const NAMES: [&str; 8] = [
        "admin", "root", "ci", "deploy", "test", "user", "guest", "backup",
    ];
    let (_dir, auth) = auth(config).await;
    for k in 0..USERS {
        add_user(&auth, &format!("new{k}"), &format!("new{k}'s password")).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..FLOODERS)
        .map(|i| {
            let (auth, stop) = (auth.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut invalid, mut busy, mut throttled) = (0, 0, 0);
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let name = NAMES[n % NAMES.len()];
                    match auth
                        .authenticate(name, &format!("guess {i} {n}"), addr(i))
                        .await
                    {
                        Err(AuthError::Invalid) => invalid += 1,
                        Err(AuthError::Busy) => busy += 1,
                        Err(AuthError::Throttled(_)) => throttled += 1,
                        other => panic!("a guess got {other:?}"),
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (invalid, busy, throttled)
            })
        })
        .collect();
    let users: Vec<_> = (0..USERS)
        .map(|k| {
            let auth = auth.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300 + 400 * u64::from(k))).await;
                let (name, password) = (format!("new{k}"), format!("new{k}'s password"));
                let start = Instant::now();
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    match auth.authenticate(&name, &password, addr(1000 + k)).await {
                        Ok(_) => return (name, attempts, Ok(())),
                        Err(AuthError::Busy | AuthError::Throttled(_))
                            if start.elapsed() < Duration::from_secs(3) =>
                        {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => return (name, attempts, Err(e)),
                    }
                }
            })
        })
        .collect();
    let mut logins = Vec::new();
    for u in users {
        logins.push(u.await.expect("the login task ends"));
    }
    stop.store(true, Ordering::Relaxed);
    let (mut invalid, mut busy, mut throttled) = (0, 0, 0);
    for f in flood {
        let (i, b, t) = f.await.expect("the flood task ends");
        (invalid, busy, throttled) = (invalid + i, busy + b, throttled + t);
    }
    FloodOutcome {
        logins,
        invalid,
        busy,
        throttled,
    }
}

fn assert_all_got_in(o: &FloodOutcome) {
    let refused: Vec<_> = o.logins.iter().filter(|(_, _, r)| r.is_err()).collect();
    assert!(
        refused.is_empty(),
        "first logins refused during the flood (name, attempts, last answer): {refused:?}; \
         the flood got {} wrong, {} shed, {} throttled",
        o.invalid,
        o.busy,
        o.throttled
    );
}

/// The benchmark's finding (docs/benchmarks.md, "A problem found: first logins during a
/// flood of wrong passwords"): the queue shed the oldest waiter whoever it was, so a first
/// login had the odds of a guess, and a shed guess cost its address nothing. Shed guesses now
/// count against their address, which the throttle then refuses before the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_logins_get_through_a_flood_of_wrong_passwords() {
    let o = first_logins_during_a_flood(serde_json::json!({
        "hash_concurrency": 1,
        "hash_queue": 4
    }))
    .await;
    assert_all_got_in(&o);
    assert!(
        o.throttled > 0,
        "no flooding address was throttled ({} wrong, {} shed)",
        o.invalid,
        o.busy
    );
}

/// The same with the throttle out of reach (4,000 failures per address): the queue alone
/// serves attempts from addresses without failures before those from flooding ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_logins_go_ahead_of_addresses_that_failed() {
    let o = first_logins_during_a_flood(serde_json::json!({
        "hash_concurrency": 1,
        "hash_queue": 4,
        "max_failures": 1000
    }))
    .await;
    assert_all_got_in(&o);
    assert_eq!(
        o.throttled, 0,
        "the throttle was meant to stay out of reach"
    );
}
