//! What a request's `Authorization` header carries, parsed before anything is looked up:
//! Basic credentials, a Bearer token, and the unverified header of a token (its algorithm and
//! key id), which decides which key verifies it. All bounded and panic-free: these run on
//! every request, for anyone.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// The longest `Authorization` value looked at (a token of Berth's is well under 2 KiB).
pub const MAX_AUTHORIZATION: usize = 16 * 1024;

/// The credentials of `Authorization: Basic <base64(user:password)>`.
pub fn basic(header: &str) -> Option<(String, String)> {
    if header.len() > MAX_AUTHORIZATION {
        return None;
    }
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = STANDARD.decode(rest.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(header: &str) -> Option<&str> {
    if header.len() > MAX_AUTHORIZATION {
        return None;
    }
    let (scheme, rest) = header.split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The parts of a JWT's header a verifier needs before it checks the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    pub alg: String,
    pub kid: Option<String>,
}

/// The unverified header of a compact JWT (`header.claims.signature`, base64url without
/// padding): Err with the reason when the token does not have that shape.
pub fn token_header(token: &str) -> Result<TokenHeader, String> {
    if token.len() > MAX_AUTHORIZATION {
        return Err("the token is too long".into());
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("a token has three parts separated by dots".into());
    };
    if claims.is_empty() || signature.is_empty() {
        return Err("a token's claims and signature must not be empty".into());
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|e| format!("the token's header is not base64url: {e}"))?;
    crate::json::check_depth(&bytes)?;
    #[derive(serde::Deserialize)]
    struct Raw {
        alg: String,
        kid: Option<String>,
    }
    let raw: Raw = serde_json::from_slice(&bytes)
        .map_err(|e| format!("the token's header is not a JWT header: {e}"))?;
    Ok(TokenHeader {
        alg: raw.alg,
        kid: raw.kid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basic_and_bearer() {
        let h = format!("Basic {}", STANDARD.encode("alice:pa:ss"));
        assert_eq!(basic(&h), Some(("alice".into(), "pa:ss".into())));
        assert_eq!(basic("basic !!!"), None);
        assert_eq!(basic("Bearer abc"), None);
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Basic abc"), None);
    }

    #[test]
    fn token_headers() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"k1","typ":"JWT"}"#);
        let h = token_header(&format!("{header}.e30.c2ln")).unwrap();
        assert_eq!(h.alg, "HS256");
        assert_eq!(h.kid.as_deref(), Some("k1"));
        assert!(token_header("a.b").is_err());
        assert!(token_header("a.b.c.d").is_err());
        assert!(token_header(&format!("{header}..c2ln")).is_err());
        assert!(token_header("!!.e30.c2ln").is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in ".{0,200}") {
            let _ = basic(&s);
            let _ = bearer(&s);
            let _ = token_header(&s);
        }
    }
}
