//! Tag lookups on PostgreSQL, in rounds: every lookup waiting when a round starts is answered
//! by that round's one query.
//!
//! Tags are not cached on PostgreSQL (another node may move one at any moment, and the README
//! promises the move is seen on every node at once), so a manifest GET by tag costs a round
//! trip. Under load most of those round trips ask the same few questions: a rollout pulls one
//! tag from hundreds of nodes. Here each lookup joins the next round that has not started yet,
//! and a round's query is sent after it has taken its lookups, so every answer comes from a
//! query that began after the lookup was asked: a tag moved (committed) before a GET arrives is
//! seen by that GET, exactly as with a query of its own. Up to `rounds` rounds run at once, each
//! with at most [`ROUND_MAX`] distinct tags; while they all run, new lookups gather for the
//! next. An idle node sends a lone lookup at once.
//!
//! Each round slot keeps a connection of its own, taken out of the node's read connections
//! (`database.max_connections`): a pooled connection costs two more round trips per query
//! (the pool's liveness check when it is taken, another when it is given back), which here
//! would cost more than the lookup itself. A round that fails (the database went away) drops
//! its connection and answers nothing: each of its lookups then runs its own query through the
//! pool, which gives the caller the real error, and the next round connects again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sqlx::AnyConnection;
use sqlx::any::AnyConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Distinct tags asked in one round at most.
pub(crate) const ROUND_MAX: usize = 256;
/// Lookups queued at most before an asker waits to queue.
const QUEUE: usize = 4096;

type Key = (i64, String);
/// A round's answer for one lookup: the digest text (`None`: no such tag); `Err`: ask alone.
type Answer = Result<Option<String>, ()>;

struct Lookup {
    key: Key,
    reply: oneshot::Sender<Answer>,
}

/// The handle lookups are sent through; the rounds run on a task of their own.
pub(crate) struct TagReads {
    queue: mpsc::Sender<Lookup>,
}

/// How the rounds' connections are made: the node's connect options, the session settings
/// every connection of the node runs first, and how long a connect may take.
pub(crate) struct Connect {
    pub options: AnyConnectOptions,
    pub settings: String,
    pub timeout: Duration,
}

impl Connect {
    async fn open(&self) -> Result<AnyConnection, sqlx::Error> {
        let mut conn = tokio::time::timeout(self.timeout, self.options.connect())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        sqlx::raw_sql(AssertSqlSafe(self.settings.clone()))
            .execute(&mut conn)
            .await?;
        Ok(conn)
    }
}

/// The open connections of the round slots not running now (at most one per slot).
type Idle = Arc<Mutex<Vec<AnyConnection>>>;

impl TagReads {
    /// Starts the task that runs rounds, at most `rounds` at once, each on a connection of
    /// its own.
    pub(crate) fn start(connect: Connect, rounds: usize) -> TagReads {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(run(Arc::new(connect), rounds.max(1), waiting));
        TagReads { queue }
    }

    /// The digest `tag` of repository `repo_id` points at, from a query that started after
    /// this call; `Err(())` when no round could answer (the caller then asks alone).
    pub(crate) async fn lookup(&self, repo_id: i64, tag: &str) -> Answer {
        let (reply, answer) = oneshot::channel();
        let key = (repo_id, tag.to_owned());
        self.queue
            .send(Lookup { key, reply })
            .await
            .map_err(|_| ())?;
        answer.await.map_err(|_| ())?
    }
}

async fn run(connect: Arc<Connect>, rounds: usize, mut waiting: mpsc::Receiver<Lookup>) {
    let slots = Arc::new(Semaphore::new(rounds));
    let idle: Idle = Default::default();
    loop {
        // A free slot first, then the lookups: those that come while every slot is busy wait
        // in the queue and go together in the next round.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = waiting.recv().await else {
            return;
        };
        let mut round: HashMap<Key, Vec<oneshot::Sender<Answer>>> = HashMap::new();
        round.entry(first.key).or_default().push(first.reply);
        while round.len() < ROUND_MAX {
            match waiting.try_recv() {
                Ok(l) => round.entry(l.key).or_default().push(l.reply),
                Err(_) => break,
            }
        }
        let (connect, idle) = (connect.clone(), idle.clone());
        tokio::spawn(async move {
            let found = ask_on_slot(&connect, &idle, round.keys()).await;
            for (key, replies) in round {
                let answer = match &found {
                    Ok(found) => Ok(found.get(&key).cloned()),
                    Err(_) => Err(()),
                };
                for reply in replies {
                    let _ = reply.send(answer.clone());
                }
            }
            drop(slot);
        });
    }
}

#[derive(Serialize)]
struct Wanted<'a> {
    r: i64,
    n: &'a str,
}

/// [`ask`] on the slot's connection (opened if it has none); a connection that failed is
/// dropped, not kept.
async fn ask_on_slot<'k>(
    connect: &Connect,
    idle: &Idle,
    keys: impl ExactSizeIterator<Item = &'k Key>,
) -> Result<HashMap<Key, String>, sqlx::Error> {
    let held = idle.lock().expect("idle connections").pop();
    let mut conn = match held {
        Some(c) => c,
        None => connect.open().await?,
    };
    let found = ask(&mut conn, keys).await?;
    idle.lock().expect("idle connections").push(conn);
    Ok(found)
}

/// One query for all `keys`: the primary-key lookup for one, a join with the list otherwise.
async fn ask<'k>(
    conn: &mut AnyConnection,
    keys: impl ExactSizeIterator<Item = &'k Key>,
) -> Result<HashMap<Key, String>, sqlx::Error> {
    let rows: Vec<(i64, String, String)> = if keys.len() == 1 {
        let mut keys = keys;
        let (repo, tag) = keys.next().expect("one key");
        sqlx::query_as("SELECT repo_id, name, digest FROM tags WHERE repo_id = $1 AND name = $2")
            .bind(*repo)
            .bind(tag.as_str())
            .fetch_all(&mut *conn)
            .await?
    } else {
        let wanted: Vec<Wanted> = keys.map(|(r, n)| Wanted { r: *r, n }).collect();
        let wanted = serde_json::to_string(&wanted).expect("a list of numbers and strings");
        sqlx::query_as(
            "SELECT t.repo_id, t.name, t.digest
             FROM json_to_recordset(CAST($1 AS json)) AS k(r bigint, n text)
             JOIN tags t ON t.repo_id = k.r AND t.name = k.n",
        )
        .bind(wanted)
        .fetch_all(&mut *conn)
        .await?
    };
    Ok(rows.into_iter().map(|(r, n, d)| ((r, n), d)).collect())
}
