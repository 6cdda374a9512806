//! Limits on JSON that clients send (manifests, admin API bodies), checked before a parser
//! walks the document: nesting deeper than [`MAX_DEPTH`] is refused, so no document costs
//! recursion proportional to its size.

/// Most levels of `[` and `{` a document may nest. Real manifests nest five or six deep.
pub const MAX_DEPTH: usize = 64;

/// The nesting depth of a JSON text: how many `[`/`{` are open at most, outside strings. The
/// text need not be valid JSON; this only counts.
pub fn depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// `Err` with a message when the text nests deeper than [`MAX_DEPTH`].
pub fn check_depth(bytes: &[u8]) -> Result<(), String> {
    let d = depth(bytes);
    if d > MAX_DEPTH {
        return Err(format!(
            "the JSON document is nested {d} levels deep; at most {MAX_DEPTH} are accepted"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn counts_nesting_outside_strings() {
        assert_eq!(depth(b"{}"), 1);
        assert_eq!(depth(br#"{"a":[1,{"b":2}]}"#), 3);
        assert_eq!(depth(br#"{"a":"[[[[{{{"}"#), 1);
        assert_eq!(depth(br#"{"a":"\"[[["}"#), 1);
        assert_eq!(depth(br#"{"a":"\\"}"#), 1);
        assert_eq!(depth(b"1"), 0);
        assert!(check_depth("[".repeat(64).as_bytes()).is_ok());
        assert!(check_depth("[".repeat(65).as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn depth_never_panics_and_is_bounded_by_the_length(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            prop_assert!(depth(&bytes) <= bytes.len());
        }
    }
}
