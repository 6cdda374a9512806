//! What an `Authorization` header carries (Basic credentials, a Bearer token, a JWT's
//! unverified header) and the token endpoint's `scope` parser: input from anyone, on every
//! request.
//!
//! Input: arbitrary bytes, read lossily as UTF-8 and given to every parser as a header value;
//! each line is also a scope. The raw bytes are also sent base64-encoded, as the credentials of
//! a Basic header and as the header of a JWT, so the fuzzer reaches the decoders' insides.
#![no_main]

use berth_core::access::{Actions, Scope};
use berth_core::credentials::{MAX_AUTHORIZATION, basic, bearer, token_header};
use libfuzzer_sys::fuzz_target;

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 with the given alphabet, padded or not (the fuzz crate depends on berth-core alone).
fn b64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let v = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= n {
                out.push(alphabet[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

fn check_scope(s: &str) {
    let Some(scope) = Scope::parse(s) else {
        return;
    };
    assert!(!scope.kind.is_empty() && !scope.name.is_empty());
    assert!(!scope.kind.contains(':'));
    for a in &scope.raw_actions {
        assert!(
            !a.is_empty() && !a.contains(',') && !a.contains(':') && a.trim() == a,
            "{a:?}"
        );
    }
    // The printed scope (as a token's `access` claim lists it) parses back to the same.
    assert_eq!(Scope::parse(&scope.to_string()).as_ref(), Some(&scope));
    let actions = scope.actions();
    assert_eq!(actions.union(Actions::ALL), Actions::ALL);
    assert_eq!(Actions::parse_list(&actions.to_string()), actions);
    let _ = scope.is_catalog();
}

fn check_header(h: &str) {
    if let Some((user, password)) = basic(h) {
        assert!(h.len() <= MAX_AUTHORIZATION);
        assert!(!user.contains(':'), "user {user:?}");
        // Encoding them again gives the same credentials.
        let again = format!(
            "Basic {}",
            b64(format!("{user}:{password}").as_bytes(), STD, true)
        );
        if again.len() <= MAX_AUTHORIZATION {
            assert_eq!(basic(&again), Some((user, password)));
        }
    }
    if let Some(token) = bearer(h) {
        assert!(h.len() <= MAX_AUTHORIZATION);
        assert!(!token.is_empty() && token.trim() == token);
        assert_eq!(bearer(&format!("Bearer {token}")), Some(token));
        check_token(token);
    }
    check_token(h);
}

fn check_token(token: &str) {
    if token_header(token).is_ok() {
        assert!(token.len() <= MAX_AUTHORIZATION);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{token:?}");
        assert!(!parts[1].is_empty() && !parts[2].is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    check_header(&s);
    check_scope(&s);
    for line in s.lines() {
        check_scope(line);
        for word in line.split(' ') {
            check_scope(word);
        }
    }

    // The raw bytes as Basic credentials and as a JWT's header.
    let basic_header = format!("Basic {}", b64(data, STD, true));
    if let Some((user, password)) = basic(&basic_header) {
        assert_eq!(format!("{user}:{password}").as_bytes(), data);
    } else if basic_header.len() <= MAX_AUTHORIZATION {
        // Refused only when the bytes are not UTF-8 or have no colon.
        assert!(std::str::from_utf8(data).map_or(true, |t| !t.contains(':')));
    }
    let jwt = format!("{}.e30.c2ln", b64(data, URL, false));
    if let Ok(h) = token_header(&jwt) {
        let _ = (h.alg, h.kid);
    }
    check_header(&format!("Bearer {jwt}"));
});
