//! Digests, references, repository names and tags: the path parameters of every `/v2` route.
//!
//! Input: arbitrary bytes, read as a string (lossily) for the parsers, and as bytes to hash.
#![no_main]

use berth_core::admin::check_project_name;
use berth_core::name::MAX_REPO_NAME_LEN;
use berth_core::{Algorithm, Digest, Digester, Reference, RepoName, TagName};
use libfuzzer_sys::fuzz_target;

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_digest(s: &str, d: &Digest) {
    // Only the canonical form parses, so printing gives back the input exactly.
    assert_eq!(d.to_string(), s);
    assert_eq!(Digest::parse(&d.to_string()).as_ref(), Ok(d));
    assert_eq!(s.parse::<Digest>().as_ref(), Ok(d));
    assert_eq!(d.hex().len(), d.algorithm().hex_len());
    assert!(
        is_lower_hex(d.hex()),
        "hex part {:?} is not path-safe",
        d.hex()
    );
}

fn check_hashing(bytes: &[u8]) {
    let cut = bytes.first().map_or(0, |&b| b as usize % (bytes.len() + 1));
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        let whole = Digest::of(alg, bytes);
        assert_eq!(whole.algorithm(), alg);
        // Hashing in two pieces, and resuming from an exported state, gives the same digest.
        let mut d = Digester::new(alg);
        d.update(&bytes[..cut]);
        let state = d.export();
        let mut resumed = Digester::restore(&state).expect("own state does not restore");
        assert_eq!(resumed.algorithm(), alg);
        d.update(&bytes[cut..]);
        resumed.update(&bytes[cut..]);
        assert_eq!(d.finish(), whole);
        assert_eq!(resumed.finish(), whole);
        // The digest is the one its printed form parses to.
        let printed = format!("{}:{}", alg.as_str(), whole.hex());
        assert_eq!(Digest::parse(&printed).as_ref(), Ok(&whole));
        check_digest(&printed, &whole);
    }
    // A stored hash state that is corrupt is refused, never a panic; one that restores works.
    if let Ok(mut d) = Digester::restore(bytes) {
        d.update(bytes);
        let _ = d.finish();
    }
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();

    let digest = Digest::parse(s);
    if let Ok(d) = &digest {
        check_digest(s, d);
    }

    let tag = TagName::parse(s);
    if let Ok(t) = &tag {
        assert_eq!(t.as_str(), s);
        assert_eq!(t.to_string(), s);
        assert_eq!(TagName::parse(&t.to_string()).as_ref(), Ok(t));
        assert!(!s.is_empty() && s.len() <= 128);
        assert!(!s.contains(':') && !s.contains('/'));
    }

    match Reference::parse(s) {
        Ok(r) => {
            assert_eq!(r.to_string(), s);
            assert_eq!(Reference::parse(&r.to_string()).as_ref(), Ok(&r));
            match &r {
                Reference::Digest(d) => assert_eq!(digest.as_ref(), Ok(d)),
                Reference::Tag(t) => {
                    assert!(!s.contains(':'));
                    assert_eq!(tag.as_ref(), Ok(t));
                }
            }
        }
        Err(_) => assert!(if s.contains(':') {
            digest.is_err()
        } else {
            tag.is_err()
        }),
    }

    if let Ok(n) = RepoName::parse(s) {
        assert_eq!(n.as_str(), s);
        assert_eq!(n.to_string(), s);
        assert_eq!(RepoName::parse(&n.to_string()).as_ref(), Ok(&n));
        assert!(s.len() <= MAX_REPO_NAME_LEN);
        // Safe as a storage path and in SQL: no empty, dot or hidden components, no upper case.
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        );
        for c in s.split('/') {
            assert!(!c.is_empty() && c != "." && c != "..", "component {c:?}");
            assert!(!c.starts_with(['.', '-', '_']) && !c.ends_with(['.', '-', '_']));
        }
        // Its project is its first component, and is itself a valid project name.
        assert_eq!(n.project(), s.split('/').next().unwrap());
        assert!(
            check_project_name(n.project()).is_ok(),
            "project {:?}",
            n.project()
        );
    }

    check_hashing(data);
});
