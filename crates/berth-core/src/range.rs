//! Byte ranges: the `Content-Range` of an upload chunk and the `Range` of a blob GET.

/// An inclusive byte range `start-end` as a chunked upload's `Content-Range` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    pub end: u64,
}

impl ChunkRange {
    /// The number of bytes, which [`parse_content_range`] guarantees fits in a u64.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Parses an upload `Content-Range`: `<start>-<end>`, also tolerating the HTTP form
/// `bytes <start>-<end>/<total or *>` that some clients send. A range whose length does not
/// fit in a u64 (`0-18446744073709551615`) is refused like any other malformed one.
pub fn parse_content_range(value: &str) -> Option<ChunkRange> {
    let v = value.trim();
    let v = v.strip_prefix("bytes ").unwrap_or(v).trim();
    let v = v.split_once('/').map_or(v, |(r, _)| r);
    let (a, b) = v.split_once('-')?;
    let start: u64 = parse_u64(a)?;
    let end: u64 = parse_u64(b)?;
    (end >= start)
        .then(|| end.checked_sub(start)?.checked_add(1))
        .flatten()
        .map(|_| ChunkRange { start, end })
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What a blob GET's `Range` header asks for, resolved against the blob's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable Range header: the whole blob.
    Full,
    /// One satisfiable range `[start, end]`, inclusive.
    Partial { start: u64, end: u64 },
    /// A well-formed range that does not overlap the blob (answered with 416).
    Unsatisfiable,
}

/// Parses a `Range: bytes=...` header for a blob of `size` bytes (RFC 9110 §14.1.2). Only a
/// single range is honoured; a multi-range or malformed header is ignored and the whole blob is
/// served, as the RFC permits. A range that names bytes but none the blob has, a backwards one
/// (`500-0`) included, is unsatisfiable (416), as the distribution-spec requires.
pub fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // suffix range: the last N bytes
        let Some(n) = parse_u64(b) else {
            return RangeRequest::Full;
        };
        if n == 0 || size == 0 {
            return RangeRequest::Unsatisfiable;
        }
        let n = n.min(size);
        return RangeRequest::Partial {
            start: size - n,
            end: size - 1,
        };
    }
    let Some(start) = parse_u64(a) else {
        return RangeRequest::Full;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match parse_u64(b) {
            Some(e) if e >= start => e,
            Some(_) => return RangeRequest::Unsatisfiable,
            None => return RangeRequest::Full,
        }
    };
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial {
        start,
        end: end.min(size - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("0-99"),
            Some(ChunkRange { start: 0, end: 99 })
        );
        assert_eq!(
            parse_content_range("bytes 100-199/*"),
            Some(ChunkRange {
                start: 100,
                end: 199
            })
        );
        assert_eq!(parse_content_range("5-4"), None);
        assert_eq!(parse_content_range("-4"), None);
        assert_eq!(parse_content_range("a-b"), None);
        assert_eq!(parse_content_range("+1-2"), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("bytes=0-9", 100),
            RangeRequest::Partial { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range("bytes=90-", 100),
            RangeRequest::Partial { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            RangeRequest::Partial { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=50-1000", 100),
            RangeRequest::Partial { start: 50, end: 99 }
        );
        assert_eq!(parse_range("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeRequest::Full);
        assert_eq!(parse_range("items=0-1", 100), RangeRequest::Full);
    }

    /// Review finding 10: an end of u64::MAX makes the chunk's length wrap; such a range
    /// cannot be satisfied by any upload and must be refused.
    #[test]
    fn content_ranges_whose_length_overflows_are_refused() {
        assert_eq!(parse_content_range("0-18446744073709551615"), None);
        assert_eq!(parse_content_range("bytes 0-18446744073709551615/*"), None);
        assert_eq!(
            parse_content_range("0-18446744073709551614"),
            Some(ChunkRange {
                start: 0,
                end: u64::MAX - 1
            })
        );
        assert_eq!(parse_content_range("0-99999999999999999999999"), None);
    }

    /// The spec (main branch): `Range: bytes=500-0` and every other range that cannot be
    /// satisfied gets 416, not the whole blob.
    #[test]
    fn backwards_ranges_are_unsatisfiable() {
        assert_eq!(
            parse_range("bytes=500-0", 1000),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range("bytes=5-1", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), RangeRequest::Unsatisfiable);
    }

    proptest! {
        #[test]
        fn partial_ranges_lie_inside_the_blob(s in "bytes=[0-9]{0,4}-[0-9]{0,4}", size in 0u64..5000) {
            if let RangeRequest::Partial { start, end } = parse_range(&s, size) {
                prop_assert!(start <= end && end < size);
            }
        }

        #[test]
        fn content_range_never_panics(s in ".{0,40}") {
            if let Some(r) = parse_content_range(&s) {
                prop_assert!(r.end >= r.start);
            }
        }
    }
}
