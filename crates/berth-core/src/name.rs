//! Repository names, tags and manifest references, checked against the distribution-spec
//! grammar. These newtypes are the only way to get such a value from outside input, so a name
//! that reaches storage or SQL has already been validated (no `..`, no `/` at the ends, no
//! upper case).

use std::fmt;

use crate::digest::{Digest, DigestError};

/// Longest repository name accepted. Clients limit `host[:port]/name` to 255 characters.
pub const MAX_REPO_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "repository name {0:?} does not match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*"
    )]
    Repo(String),
    #[error("repository name is longer than {MAX_REPO_NAME_LEN} characters")]
    RepoTooLong,
    #[error("tag {0:?} does not match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    Tag(String),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// A repository name such as `team/app/api`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &[u8]) -> bool {
    let mut i = 0;
    let n = c.len();
    loop {
        // a run of alphanumerics
        let start = i;
        while i < n && is_alnum(c[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == n {
            return true;
        }
        // a separator
        match c[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < n && c[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < n && c[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

impl RepoName {
    pub fn parse(s: &str) -> Result<RepoName, NameError> {
        if s.len() > MAX_REPO_NAME_LEN {
            return Err(NameError::RepoTooLong);
        }
        if s.is_empty() || !s.split('/').all(|c| valid_component(c.as_bytes())) {
            return Err(NameError::Repo(s.to_owned()));
        }
        Ok(RepoName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The project a repository belongs to: its first path component.
    pub fn project(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagName(String);

impl TagName {
    pub fn parse(s: &str) -> Result<TagName, NameError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..]
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
        if ok {
            Ok(TagName(s.to_owned()))
        } else {
            Err(NameError::Tag(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TagName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TagName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// The `<reference>` of a manifest route: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(TagName),
    Digest(Digest),
}

impl Reference {
    /// A reference with a `:` is a digest (tags cannot contain one).
    pub fn parse(s: &str) -> Result<Reference, NameError> {
        if s.contains(':') {
            Ok(Reference::Digest(Digest::parse(s)?))
        } else {
            Ok(Reference::Tag(TagName::parse(s)?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_spec_examples() {
        for ok in [
            "a",
            "library/nginx",
            "team/app/api",
            "a.b_c__d---e/f",
            "x/manifests/y",
            "0/9",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok} refused");
        }
        assert_eq!(RepoName::parse("team/app/api").unwrap().project(), "team");
    }

    #[test]
    fn refuses_traversal_and_bad_grammar() {
        for bad in [
            "", "/", "a/", "/a", "a//b", "..", "a/../b", "a/./b", "A", "a___b", "a_-b", "-a", "a-",
            "a.", "a..b", "a b", "a%2fb", "a\\b", "a/.b",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            RepoName::parse(&"a".repeat(256)),
            Err(NameError::RepoTooLong)
        );
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(TagName::parse(ok).is_ok(), "{ok} refused");
        }
        for bad in ["", ".a", "-a", "a/b", "a:b", &"a".repeat(129), "ü"] {
            assert!(TagName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn references() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(Reference::parse(d), Ok(Reference::Digest(_))));
        assert!(Reference::parse("sha256:zz").is_err());
    }

    proptest! {
        #[test]
        fn valid_names_are_safe_paths(s in "[a-z0-9._/-]{1,80}") {
            if let Ok(n) = RepoName::parse(&s) {
                for c in n.as_str().split('/') {
                    prop_assert!(!c.is_empty() && c != "." && c != "..");
                    prop_assert!(!c.starts_with('.') && !c.starts_with('-') && !c.starts_with('_'));
                }
            }
        }

        #[test]
        fn generated_names_parse(parts in proptest::collection::vec("[a-z0-9]{1,5}((\\.|_|__|-{1,3})[a-z0-9]{1,5}){0,2}", 1..4)) {
            let s = parts.join("/");
            prop_assert!(RepoName::parse(&s).is_ok(), "{} refused", s);
        }
    }
}
