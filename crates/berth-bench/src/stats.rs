//! Medians, percentiles, and what a pool of workers measured.

use std::time::{Duration, Instant};

/// The value at quantile `q` (0..=1) of `v`, by nearest rank; `None` when empty.
pub fn percentile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

pub fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub const MIB: f64 = 1024.0 * 1024.0;

/// What a set of workers recorded: latencies of the operations that succeeded (ms), bytes
/// moved, and the failures with a few samples of their messages.
#[derive(Default)]
pub struct Tally {
    pub lat_ms: Vec<f64>,
    pub bytes: u64,
    pub errors: u64,
    pub samples: Vec<String>,
}

impl Tally {
    pub fn ok(&mut self, started: Instant) {
        self.lat_ms.push(ms(started.elapsed()));
    }

    pub fn fail(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.samples.len() < 5 {
            self.samples.push(e.to_string());
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.lat_ms.extend(other.lat_ms);
        self.bytes += other.bytes;
        self.errors += other.errors;
        for s in other.samples {
            if self.samples.len() < 5 {
                self.samples.push(s);
            }
        }
    }

    pub fn count(&self) -> usize {
        self.lat_ms.len()
    }

    pub fn p(&self, q: f64) -> Option<f64> {
        percentile(&self.lat_ms, q)
    }
}

/// A small xorshift generator: fast, deterministic, good enough for test data and choices.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
