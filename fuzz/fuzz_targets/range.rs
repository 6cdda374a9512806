//! The upload chunk's `Content-Range` and the blob GET's `Range`.
//!
//! Input: `<blob size in decimal>\n<header value>` (read lossily as UTF-8). Without a
//! newline, or with a first line that is not a u64, the whole input is the value and the size
//! is its length. Both parsers get the value.
#![no_main]

use berth_core::range::{RangeRequest, parse_content_range, parse_range};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (size, value) = match text.split_once('\n') {
        Some((first, rest)) => match first.parse::<u64>() {
            Ok(size) => (size, rest),
            Err(_) => (text.len() as u64, text.as_ref()),
        },
        None => (text.len() as u64, text.as_ref()),
    };

    if let Some(r) = parse_content_range(value) {
        assert!(r.end >= r.start, "{r:?}");
        assert!(
            r.end
                .checked_sub(r.start)
                .and_then(|d| d.checked_add(1))
                .is_some(),
            "{r:?}"
        );
        let len = r.len(); // overflow checks are on: a wrapping length panics here
        assert_eq!(len - 1, r.end - r.start);
        assert!(!r.is_empty());
        // The canonical forms parse to the same range.
        assert_eq!(
            parse_content_range(&format!("{}-{}", r.start, r.end)),
            Some(r)
        );
        assert_eq!(
            parse_content_range(&format!("bytes {}-{}/*", r.start, r.end)),
            Some(r)
        );
    }

    match parse_range(value, size) {
        RangeRequest::Partial { start, end } => {
            assert!(
                start <= end && end < size,
                "bytes {start}-{end} of a {size}-byte blob"
            );
            let len = end - start + 1; // fits: end < size
            assert!(len <= size);
            assert_eq!(
                parse_range(&format!("bytes={start}-{end}"), size),
                RangeRequest::Partial { start, end }
            );
        }
        RangeRequest::Unsatisfiable => {
            // Only a value that asks for bytes can be refused with 416.
            assert!(value.trim().starts_with("bytes="));
        }
        RangeRequest::Full => {}
    }
    // An empty blob has no byte to serve.
    assert!(!matches!(
        parse_range(value, 0),
        RangeRequest::Partial { .. }
    ));
});
