//! Who is connected, and for how long they may stay idle. Every accepted TCP connection is
//! admitted here first: at most `server.max_connections_per_address` per client address (the
//! TCP peer; `server.trusted_proxies` are exempt, a load balancer is one address for many
//! clients; IPv6 addresses count per /64, which one host can fill), and at most
//! `server.max_connections` in all, fitted to the open-files limit. The excess is refused at
//! once, never queued. At the total cap the oldest *idle* connection (no request in flight:
//! silent, slowloris, or keep-alive) is closed to make room, so /healthz and new clients are
//! served while an attack holds connections open; connections with a request in flight are
//! never taken.
//!
//! A connection is idle from its acceptance until its first request's headers are complete,
//! and again from the end of each response until the next request's headers are complete. It
//! is closed when it stays idle for `server.header_read_timeout` before its first request
//! (HTTP/1 and HTTP/2 alike, before any byte too), or `server.idle_timeout` between requests.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use berth_core::config::{Config, IpBlock};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// File descriptors kept for what is not a connection: the database pool, the listener, the
/// runtime, log files.
const FD_RESERVE: u64 = 128;
/// Connections looked at for an idle one to close when the total cap is reached, at most.
const EVICTION_SCAN: usize = 64;

/// The key connections are counted under per client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddressKey {
    V4(u32),
    /// The /64 prefix.
    V6(u64),
}

fn address_key(ip: IpAddr) -> AddressKey {
    match ip.to_canonical() {
        IpAddr::V4(a) => AddressKey::V4(u32::from(a)),
        IpAddr::V6(a) => AddressKey::V6((u128::from(a) >> 64) as u64),
    }
}

/// The limits, resolved from the configuration and the process's open-files limit.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub total: usize,
    pub per_address: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub exempt: Vec<IpBlock>,
}

impl ConnectionLimits {
    /// The configured limits, with the total fitted to `open_files` (the soft open-files
    /// limit): every connection may need a second descriptor for the blob it streams.
    pub fn new(config: &Config, open_files: Option<u64>) -> ConnectionLimits {
        let s = &config.server;
        let mut total = s.max_connections as usize;
        if let Some(n) = open_files {
            let fit = (n.saturating_sub(FD_RESERVE) / 2).max(16);
            total = total.min(usize::try_from(fit).unwrap_or(usize::MAX));
        }
        ConnectionLimits {
            total,
            per_address: s.max_connections_per_address as usize,
            header_timeout: s.header_read_timeout.0,
            idle_timeout: s.idle_timeout.0,
            exempt: s
                .trusted_proxies
                .iter()
                .filter_map(|p| IpBlock::parse(p))
                .collect(),
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub accepted: AtomicU64,
    pub refused_per_address: AtomicU64,
    pub refused_total: AtomicU64,
    pub evicted: AtomicU64,
    pub closed_idle: AtomicU64,
    pub accept_errors: AtomicU64,
}

#[derive(Default)]
struct State {
    open: usize,
    per_address: HashMap<AddressKey, usize>,
    /// Connections in the order they were admitted (dead entries are skipped and pruned).
    order: VecDeque<Weak<Connection>>,
}

/// The connections of this process (all its listeners share one budget).
pub struct Connections {
    pub limits: ConnectionLimits,
    pub stats: ConnectionStats,
    state: Mutex<State>,
}

/// One admitted connection.
pub struct Connection {
    key: Option<AddressKey>,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Since when no request has been in flight (meaningful while `in_flight` is 0).
    idle_since: Mutex<Instant>,
    /// Notified whenever a request starts or ends.
    changed: Notify,
    /// Cancelled when the connection is chosen to make room at the total cap.
    evicted: CancellationToken,
}

/// Holds an admitted connection's place; dropping it frees the place.
pub struct Admitted {
    connections: Arc<Connections>,
    pub connection: Arc<Connection>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut st = self.connections.state();
        st.open = st.open.saturating_sub(1);
        if let Some(key) = self.connection.key
            && let Some(n) = st.per_address.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                st.per_address.remove(&key);
            }
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    PerAddress,
    Total,
}

impl Connections {
    pub fn new(limits: ConnectionLimits) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            stats: ConnectionStats::default(),
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.state().open
    }

    /// Admits a connection from `peer`, or says why not.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, Refusal> {
        let exempt = self.limits.exempt.iter().any(|b| b.contains(peer));
        let key = (!exempt).then(|| address_key(peer));
        let mut st = self.state();
        if let Some(k) = key
            && st.per_address.get(&k).copied().unwrap_or(0) >= self.limits.per_address
        {
            self.stats
                .refused_per_address
                .fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::PerAddress);
        }
        if st.open >= self.limits.total && !evict_one_idle(&mut st) {
            self.stats.refused_total.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Total);
        }
        if st.open >= self.limits.total {
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        }
        st.open += 1;
        if let Some(k) = key {
            *st.per_address.entry(k).or_default() += 1;
        }
        let connection = Arc::new(Connection {
            key,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: Mutex::new(Instant::now()),
            changed: Notify::new(),
            evicted: CancellationToken::new(),
        });
        st.order.push_back(Arc::downgrade(&connection));
        // Closed connections leave dead entries behind; drop them once they are most of it.
        if st.order.len() > 2 * st.open + 1024 {
            st.order.retain(|w| w.strong_count() > 0);
        }
        drop(st);
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted {
            connections: self.clone(),
            connection,
        })
    }
}

/// Marks the oldest idle connection (among the first [`EVICTION_SCAN`] alive) for closing.
fn evict_one_idle(st: &mut State) -> bool {
    let mut scanned = 0;
    while scanned < EVICTION_SCAN {
        let Some(w) = st.order.pop_front() else {
            return false;
        };
        let Some(c) = w.upgrade() else { continue };
        scanned += 1;
        if c.in_flight.load(Ordering::Acquire) == 0 && !c.evicted.is_cancelled() {
            c.evicted.cancel();
            return true;
        }
        st.order.push_back(w);
    }
    false
}

impl Connection {
    /// Whether no request is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    fn idle_since(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.idle_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request's headers are complete: the connection is busy until [`RequestGuard`] drops.
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
        RequestGuard(self.clone())
    }

    /// Resolves when the connection should be closed: chosen to make room, or idle for longer
    /// than its timeout.
    pub async fn closing(&self, limits: &ConnectionLimits) -> Closing {
        loop {
            // Registered before the state is read, so a request that starts or ends from here
            // on wakes this loop to look again.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) > 0 {
                tokio::select! {
                    () = changed => continue,
                    () = self.evicted.cancelled() => return Closing::Evicted,
                }
            }
            let since = *self.idle_since();
            let timeout = if self.requests.load(Ordering::Relaxed) == 0 {
                limits.header_timeout
            } else {
                limits.idle_timeout
            };
            tokio::select! {
                () = tokio::time::sleep_until(since + timeout) => {
                    if self.in_flight.load(Ordering::Acquire) == 0 && *self.idle_since() == since {
                        return Closing::Idle;
                    }
                }
                () = changed => {}
                () = self.evicted.cancelled() => return Closing::Evicted,
            }
        }
    }
}

/// Why a connection is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    Idle,
    Evicted,
}

/// A request in flight on a connection.
pub struct RequestGuard(Arc<Connection>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let c = &self.0;
        *c.idle_since() = Instant::now();
        c.in_flight.fetch_sub(1, Ordering::AcqRel);
        c.changed.notify_one();
    }
}

/// The soft open-files limit of this process, where it can be read.
pub fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct given.
        (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
    }
    #[cfg(not(unix))]
    None
}

/// The soft open-files limit raised to the hard one (a server needs descriptors, and the soft
/// default of many systems is 1024). Returns (before, after), or None where it cannot be read.
pub fn raise_open_files_limit() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct given.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return None;
            }
            let before = lim.rlim_cur;
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    return Some((before, lim.rlim_max));
                }
            }
            Some((before, before))
        }
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_address: usize) -> ConnectionLimits {
        ConnectionLimits {
            total,
            per_address,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            exempt: vec![IpBlock::parse("10.0.0.1").unwrap()],
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_per_address_and_exempts_trusted_proxies() {
        let c = Connections::new(limits(100, 2));
        let a = c.admit(ip("1.1.1.1")).unwrap();
        let _b = c.admit(ip("1.1.1.1")).unwrap();
        assert_eq!(c.admit(ip("1.1.1.1")).err(), Some(Refusal::PerAddress));
        assert!(c.admit(ip("1.1.1.2")).is_ok());
        // One host's IPv6 addresses share their /64.
        let _x = c.admit(ip("2001:db8::1")).unwrap();
        let _y = c.admit(ip("2001:db8::2")).unwrap();
        assert_eq!(c.admit(ip("2001:db8::3")).err(), Some(Refusal::PerAddress));
        assert!(c.admit(ip("2001:db8:0:1::3")).is_ok());
        let proxies: Vec<_> = (0..10).map(|_| c.admit(ip("10.0.0.1")).unwrap()).collect();
        assert_eq!(proxies.len(), 10);
        drop(a);
        assert!(
            c.admit(ip("1.1.1.1")).is_ok(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn the_total_cap_closes_the_oldest_idle_connection_never_a_busy_one() {
        let c = Connections::new(limits(2, 100));
        let busy = c.admit(ip("1.1.1.1")).unwrap();
        let _request = busy.connection.request_started();
        let idle = c.admit(ip("1.1.1.2")).unwrap();
        let third = c.admit(ip("1.1.1.3")).unwrap();
        assert!(idle.connection.evicted.is_cancelled());
        assert!(!busy.connection.evicted.is_cancelled());
        drop(idle);
        // Now the busy one and the third (idle) are open: a fourth takes the third's place.
        let _fourth = c.admit(ip("1.1.1.4")).unwrap();
        assert!(third.connection.evicted.is_cancelled());
        drop(third);
        // Only busy connections left: refused.
        let _r = _fourth.connection.request_started();
        assert_eq!(c.admit(ip("1.1.1.5")).err(), Some(Refusal::Total));
    }

    #[test]
    fn the_total_fits_the_open_files_limit() {
        let config = Config::default();
        assert_eq!(ConnectionLimits::new(&config, Some(256)).total, 64);
        assert_eq!(
            ConnectionLimits::new(&config, Some(u64::MAX)).total,
            config.server.max_connections as usize
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_close_after_their_timeout() {
        let c = Connections::new(limits(10, 10));
        let l = c.limits.clone();
        let a = c.admit(ip("1.1.1.1")).unwrap();
        let start = Instant::now();
        assert_eq!(a.connection.closing(&l).await, Closing::Idle);
        assert_eq!(start.elapsed(), l.header_timeout);
        // A request in flight keeps it; the idle timeout counts from its end.
        let b = c.admit(ip("1.1.1.1")).unwrap();
        let r = b.connection.request_started();
        let conn = b.connection.clone();
        let l2 = l.clone();
        let closing = tokio::spawn(async move { conn.closing(&l2).await });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!closing.is_finished());
        let ended = Instant::now();
        drop(r);
        assert_eq!(closing.await.unwrap(), Closing::Idle);
        assert_eq!(ended.elapsed(), l.idle_timeout);
    }

    /// A request that starts and ends while the clock waits for the (longer) header timeout
    /// moves the deadline to its end plus the idle timeout.
    #[tokio::test(start_paused = true)]
    async fn a_request_while_waiting_for_the_first_moves_the_deadline() {
        let mut l = limits(10, 10);
        l.idle_timeout = Duration::from_secs(2);
        let c = Connections::new(l.clone());
        let a = c.admit(ip("1.1.1.1")).unwrap();
        let conn = a.connection.clone();
        let l2 = l.clone();
        let start = Instant::now();
        let closing = tokio::spawn(async move { conn.closing(&l2).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(a.connection.request_started());
        assert_eq!(closing.await.unwrap(), Closing::Idle);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
}
