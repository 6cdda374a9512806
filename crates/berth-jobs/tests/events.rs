//! The events outbox end to end: pushes, tag moves and deletes made through the registry API
//! (on two nodes with `TEST_METASTORE=postgres`) reach a sink through the events worker in
//! stream order, every one of them; a failing sink gets the same events again; and when the
//! node holding a sink dies, another node goes on after its lease, losing nothing.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use berth_core::config::EventsConfig;
use berth_jobs::{EventSink, EventWorker, run_worker};
use berth_meta::{Event, EventPosition, MetaStore};
use common::{Env, test_config};
use tokio_util::sync::CancellationToken;

/// A sink that keeps what it is handed, fails its first `fail_first` deliveries, and takes
/// `slow_first` to answer its first delivery.
struct Recorder {
    name: String,
    got: Mutex<Vec<Event>>,
    fail_first: Mutex<u32>,
    slow_first: Mutex<Option<Duration>>,
}

impl Recorder {
    fn new(name: &str, fail_first: u32) -> Arc<Recorder> {
        Arc::new(Recorder {
            name: name.into(),
            got: Mutex::new(Vec::new()),
            fail_first: Mutex::new(fail_first),
            slow_first: Mutex::new(None),
        })
    }

    fn got(&self) -> Vec<Event> {
        self.got.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl EventSink for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, events: &[Event]) -> Result<(), String> {
        let slow = self.slow_first.lock().unwrap().take();
        if let Some(wait) = slow {
            tokio::time::sleep(wait).await;
        }
        let mut fail = self.fail_first.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err("the receiver is down".into());
        }
        self.got.lock().unwrap().extend_from_slice(events);
        Ok(())
    }
}

fn events_config() -> EventsConfig {
    EventsConfig {
        poll_interval: humantime_ms(20),
        batch: 7,
        lease: humantime_ms(400),
        ..EventsConfig::default()
    }
}

fn humantime_ms(ms: u64) -> berth_core::config::HumanDuration {
    berth_core::config::HumanDuration(Duration::from_millis(ms))
}

/// Starts an events worker on `meta` for `sink`; the token stops it.
fn start(
    meta: &MetaStore,
    sink: Arc<Recorder>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let worker = EventWorker::new(meta.clone(), events_config(), vec![sink]);
    (stop.clone(), tokio::spawn(run_worker(worker, stop)))
}

/// Waits until the outbox holds at least `n` events that every older transaction has settled
/// (on PostgreSQL other tests' transactions can hold the newest back a moment) and `sink` was
/// handed the last of them; returns the outbox.
async fn wait_for_all(env: &Env, sink: &Recorder, n: usize) -> Vec<Event> {
    let mut all = Vec::new();
    for _ in 0..500 {
        all = env
            .meta
            .events_after(EventPosition::default(), 10_000)
            .await
            .unwrap();
        let got = sink.got();
        if all.len() >= n && got.last().map(Event::position) == all.last().map(Event::position) {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "the sink got {} events, the outbox holds {} (of {n} expected): {:?}",
        sink.got().len(),
        all.len(),
        sink.got()
    );
}

fn nodes() -> usize {
    match std::env::var("TEST_METASTORE").as_deref() {
        Ok("postgres") => 2,
        _ => 1,
    }
}

/// Registers the sinks at the (empty) start of the stream, so they are handed everything.
async fn register(env: &Env, names: &[&str]) {
    for name in names {
        let at = env
            .meta
            .claim_event_consumer(name, "setup", 60_000)
            .await
            .unwrap();
        assert_eq!(at, Some(EventPosition::default()));
        env.meta
            .release_event_consumer(name, "setup")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn every_change_reaches_the_sink_in_order_across_nodes_and_failures() {
    let env = Arc::new(Env::cluster(test_config(Duration::from_secs(3600)), nodes()).await);
    register(&env, &["steady", "flaky"]).await;
    let steady = Recorder::new("steady", 0);
    let flaky = Recorder::new("flaky", 3);
    // Both sinks run on every node: one node at a time hands each its events.
    let mut workers = Vec::new();
    for (meta, _) in &env.nodes {
        workers.push(start(meta, steady.clone()));
        workers.push(start(meta, flaky.clone()));
    }
    // Concurrent pushes, retags and deletes through the API, spread over the nodes.
    let mut tasks = Vec::new();
    for t in 0..4 {
        let env = env.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..6 {
                let repo = format!("team/app{t}");
                let layer = format!("layer {t} {i}");
                let img = env
                    .push_image(&repo, Some("latest"), &[layer.as_bytes()])
                    .await;
                if i % 3 == 2 {
                    let r = env
                        .request(
                            Method::DELETE,
                            &format!("/v2/{repo}/manifests/{}", img.digest),
                            &[],
                            vec![],
                        )
                        .await;
                    assert_eq!(r.status, StatusCode::ACCEPTED);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = wait_for_all(&env, &steady, 56).await;
    // 24 pushes, each tagged `latest` (a tag set each), 8 deletes.
    let count = |kind: &str| all.iter().filter(|e| e.kind == kind).count();
    assert_eq!(
        (
            count("artifact.pushed"),
            count("tag.set"),
            count("artifact.deleted")
        ),
        (24, 24, 8),
        "{all:?}"
    );
    let got = steady.got();
    assert_eq!(got, all, "each event once, in stream order");
    // The flaky sink was handed the same batches again until it took them: nothing lost.
    let flaky_got = wait_for_all(&env, &flaky, 56).await;
    assert_eq!(
        *flaky.fail_first.lock().unwrap(),
        0,
        "its failures were retried"
    );
    assert_eq!(flaky.got(), flaky_got);
    // Per repository the events are in the order the changes were made: a deleted image was
    // pushed and tagged before it was deleted.
    for e in all.iter().filter(|e| e.kind == "artifact.deleted") {
        let pushed = all
            .iter()
            .position(|p| p.kind == "artifact.pushed" && p.digest == e.digest)
            .unwrap();
        assert!(all[pushed].position() < e.position());
    }
    for (stop, handle) in workers {
        stop.cancel();
        handle.await.unwrap();
    }
}

#[tokio::test]
async fn when_the_node_holding_a_sink_dies_another_goes_on_after_its_lease() {
    let env = Env::cluster(test_config(Duration::from_secs(3600)), nodes()).await;
    register(&env, &["hook"]).await;
    let first = Recorder::new("hook", 0);
    let (_, dying) = start(&env.nodes[0].0, first.clone());
    env.push_image("app", Some("v1"), &[b"one"]).await;
    wait_for_all(&env, &first, 2).await;
    // The node dies: its task ends without giving up its lease.
    dying.abort();
    let _ = dying.await;
    env.push_image("app", Some("v2"), &[b"two"]).await;
    let second = Recorder::new("hook", 0);
    let (stop, handle) = start(&env.nodes[env.nodes.len() - 1].0, second.clone());
    let all = wait_for_all(&env, &second, 4).await;
    let handed: Vec<Event> = first.got().into_iter().chain(second.got()).collect();
    assert_eq!(
        handed, all,
        "the second node went on where the first stopped"
    );
    assert!(!second.got().is_empty());
    stop.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn a_sink_slower_than_half_the_lease_is_given_up_and_tried_again() {
    let env = Env::cluster(test_config(Duration::from_secs(3600)), nodes()).await;
    register(&env, &["slow"]).await;
    let sink = Recorder::new("slow", 0);
    // Longer than the lease (400 ms). Were it waited for, the lease would run out meanwhile,
    // the other node would hand the same events on, and then this delivery would land too:
    // everything twice. Given up at half the lease, it is tried again by the node that holds
    // the consumer.
    *sink.slow_first.lock().unwrap() = Some(Duration::from_millis(700));
    let workers: Vec<_> = env
        .nodes
        .iter()
        .chain(env.nodes.iter())
        .take(2)
        .map(|(meta, _)| start(meta, sink.clone()))
        .collect();
    env.push_image("app", Some("v1"), &[b"one"]).await;
    let all = wait_for_all(&env, &sink, 2).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sink.got(), all, "handed on once, in order");
    for (stop, handle) in workers {
        stop.cancel();
        handle.await.unwrap();
    }
}
