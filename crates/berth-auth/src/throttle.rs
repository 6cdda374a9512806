//! Brute-force protection: failed logins are counted per (user, source address) and per source
//! address within a sliding window. A pair over its limit is refused until the window passes;
//! an address over four times the limit (over all names) is refused the same way. Counting per
//! pair means a stranger elsewhere cannot lock an account out.
//!
//! Logins shed by the full password-check queue count against their address only (the queue's
//! doing must not lock an account), so a flood from many addresses reaches the address limit
//! too. An address with any failure or shed login in the window is suspect: its password checks
//! wait behind those of clean addresses ([`crate::secret::Standing`]).
//!
//! An IPv6 address counts by its /64 network: one host is routinely given a whole /64 and can
//! send from any address in it. An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is the
//! IPv4 address.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked at most; beyond it the oldest state is dropped wholesale (an attacker rotating
/// names must not grow memory without bound).
const MAX_KEYS: usize = 100_000;
/// An address may fail this many times the per-pair limit over all names.
const ADDRESS_FACTOR: usize = 4;

#[derive(Default)]
struct Windows {
    pairs: HashMap<(String, IpAddr), VecDeque<Instant>>,
    addresses: HashMap<IpAddr, VecDeque<Instant>>,
}

pub struct FailureThrottle {
    max: usize,
    window: Duration,
    state: Mutex<Windows>,
}

/// The key an address is counted under: itself for IPv4, its /64 network for IPv6.
fn source(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

fn prune(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
        q.pop_front();
    }
}

impl FailureThrottle {
    pub fn new(max: u32, window: Duration) -> FailureThrottle {
        FailureThrottle {
            max: max.max(1) as usize,
            window,
            state: Mutex::new(Windows::default()),
        }
    }

    /// Starts a login attempt: `Some(wait)` when attempts for this pair or address must be
    /// refused for `wait`; otherwise the attempt counts against its (user, address) pair at
    /// once (under the same lock), so parallel guesses at one account see each other.
    /// [`FailureThrottle::succeeded`] or [`FailureThrottle::release`] take it back, and
    /// [`FailureThrottle::failed_attempt`] counts it against the address as well.
    pub fn begin(&self, user: &str, addr: IpAddr) -> Option<Duration> {
        let addr = source(addr);
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(wait) = self.wait(&mut s, user, addr, now) {
            return Some(wait);
        }
        if s.pairs.len() + s.addresses.len() > MAX_KEYS {
            *s = Windows::default();
        }
        let window = self.window;
        let q = s.pairs.entry((user.to_owned(), addr)).or_default();
        prune(q, now, window);
        q.push_back(now);
        None
    }

    /// The attempt begun for this pair failed: it also counts against the address.
    pub fn failed_attempt(&self, addr: IpAddr) {
        let addr = source(addr);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.count_against(&mut s, addr);
    }

    /// The attempt begun for this pair was shed by the password-check queue: taken back from
    /// the pair, counted against the address.
    pub fn shed(&self, user: &str, addr: IpAddr) {
        let addr = source(addr);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = s.pairs.get_mut(&(user.to_owned(), addr)) {
            q.pop_back();
        }
        self.count_against(&mut s, addr);
    }

    fn count_against(&self, s: &mut Windows, addr: IpAddr) {
        let now = Instant::now();
        let q = s.addresses.entry(addr).or_default();
        prune(q, now, self.window);
        q.push_back(now);
    }

    /// Whether any login from `addr` failed or was shed within the window.
    pub fn is_suspect(&self, addr: IpAddr) -> bool {
        let addr = source(addr);
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.addresses.get_mut(&addr).is_some_and(|q| {
            prune(q, now, self.window);
            !q.is_empty()
        })
    }

    /// Takes back an attempt that neither succeeded nor failed (the check could not be made).
    pub fn release(&self, user: &str, addr: IpAddr) {
        let addr = source(addr);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = s.pairs.get_mut(&(user.to_owned(), addr)) {
            q.pop_back();
        }
    }

    /// `Some(wait)` when attempts for this pair or address must be refused for `wait`.
    pub fn check(&self, user: &str, addr: IpAddr) -> Option<Duration> {
        let addr = source(addr);
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.wait(&mut s, user, addr, now)
    }

    fn wait(&self, s: &mut Windows, user: &str, addr: IpAddr, now: Instant) -> Option<Duration> {
        let mut wait = None;
        if let Some(q) = s.pairs.get_mut(&(user.to_owned(), addr)) {
            prune(q, now, self.window);
            if q.len() >= self.max {
                wait = q
                    .front()
                    .map(|t| self.window.saturating_sub(now.duration_since(*t)));
            }
        }
        if let Some(q) = s.addresses.get_mut(&addr) {
            prune(q, now, self.window);
            if q.len() >= self.max * ADDRESS_FACTOR {
                let w = q
                    .front()
                    .map(|t| self.window.saturating_sub(now.duration_since(*t)));
                wait = wait.max(w);
            }
        }
        wait.map(|w| w.max(Duration::from_secs(1)))
    }

    /// Records a failure without an attempt begun (tests and callers outside logins).
    pub fn failed(&self, user: &str, addr: IpAddr) {
        // When the pair is throttled already there is nothing more to count.
        if self.begin(user, addr).is_none() {
            self.failed_attempt(addr);
        }
    }

    /// A successful login forgets the pair's failures (not the address's).
    pub fn succeeded(&self, user: &str, addr: IpAddr) {
        let addr = source(addr);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.pairs.remove(&(user.to_owned(), addr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_lock_and_others_do_not() {
        let t = FailureThrottle::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(t.check("alice", a).is_none());
            t.failed("alice", a);
        }
        assert!(t.check("alice", a).is_some());
        assert!(
            t.check("alice", b).is_none(),
            "another address is not locked out"
        );
        assert!(
            t.check("bob", a).is_none(),
            "another name from the address is not yet"
        );
        for i in 0..9 {
            t.failed(&format!("u{i}"), a);
        }
        assert!(
            t.check("bob", a).is_some(),
            "the address is throttled after 4x the limit"
        );
        assert!(t.check("bob", b).is_none());
    }

    #[test]
    fn parallel_attempts_see_each_other() {
        let t = FailureThrottle::new(2, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.9".parse().unwrap();
        // Two attempts begun, none finished: the third is refused already.
        assert!(t.begin("x", a).is_none());
        assert!(t.begin("x", a).is_none());
        assert!(t.begin("x", a).is_some());
        // A success forgets the pair.
        t.succeeded("x", a);
        assert!(t.begin("x", a).is_none());
    }

    #[test]
    fn sheds_count_against_the_address_only() {
        let t = FailureThrottle::new(2, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.3".parse().unwrap();
        let b: IpAddr = "10.0.0.4".parse().unwrap();
        assert!(!t.is_suspect(a));
        for _ in 0..7 {
            assert!(
                t.begin("alice", a).is_none(),
                "a shed does not lock the pair"
            );
            t.shed("alice", a);
            assert!(t.is_suspect(a));
        }
        assert!(t.begin("alice", a).is_none());
        t.shed("alice", a);
        assert!(
            t.check("bob", a).is_some(),
            "the address is throttled after 4x the limit"
        );
        assert!(!t.is_suspect(b));
        t.failed("x", b);
        assert!(t.is_suspect(b), "a failure makes the address suspect too");
    }

    #[test]
    fn an_ipv6_network_counts_as_one_address() {
        // One host owns a whole /64 and can send from any of its 2^64 addresses.
        let t = FailureThrottle::new(2, Duration::from_secs(60));
        for i in 0..(2 * ADDRESS_FACTOR) {
            let a: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            t.failed(&format!("user{i}"), a);
        }
        let other_host: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(
            t.check("someone", other_host).is_some(),
            "the /64 is throttled"
        );
        assert!(t.is_suspect(other_host));
        let next_network: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(t.check("someone", next_network).is_none());
        assert!(!t.is_suspect(next_network));
        // An IPv4 address written as IPv6 is the IPv4 address.
        let v4: IpAddr = "10.1.1.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.1.1".parse().unwrap();
        t.failed("x", v4);
        t.failed("x", v4);
        assert!(t.check("x", mapped).is_some());
    }

    #[test]
    fn windows_expire() {
        let t = FailureThrottle::new(1, Duration::from_millis(30));
        let a: IpAddr = "::1".parse().unwrap();
        t.failed("x", a);
        assert!(t.check("x", a).is_some());
        assert!(t.is_suspect(a));
        std::thread::sleep(Duration::from_millis(40));
        assert!(t.check("x", a).is_none());
        assert!(!t.is_suspect(a));
    }
}
