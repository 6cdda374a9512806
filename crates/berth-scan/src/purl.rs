//! Package URLs (purl, <https://github.com/package-url/purl-spec>): the identifier SBOMs and
//! vulnerability databases use to name a package across tools.
//!
//! The purl is built in its canonical form: qualifiers sorted by key, empty ones left out, and
//! every component percent-encoded except the characters the spec's "Character encoding"
//! section says must stay as they are (`A-Z a-z 0-9 . - _ ~` and `:`), so `+` in a Debian
//! version is `%2B` and an npm scope's `@` is `%40`. The encoder is written here rather than
//! taken from the `packageurl` crate because that crate leaves `/`, `,`, `(`, `)` and others
//! unencoded in a version, which is not canonical and, for `/`, does not even parse back to the
//! same purl; the crate is a test dependency instead, as the independent parser that checks
//! that what is written here parses back.
//!
//! Per type:
//! - `deb` and `apk`: the namespace is the distribution's `ID` (`debian` / `alpine` when the
//!   image has no os-release); qualifiers `arch`, `distro` and `upstream`. `upstream` names the
//!   source package when it differs from the binary (syft's convention, which grype matches on):
//!   `name`, or `name@version` when the source version differs too (a Debian binNMU).
//! - `rpm`: the version is `version-release` and the epoch is the `epoch` qualifier (as the
//!   spec says); `upstream` is the source RPM's file name, and the namespace is the vendor with
//!   syft's two renamings (`rhel` → `redhat`, `opensuse-*` → `opensuse`).
//! - `distro` is the release's codename (`bookworm`, as in the spec's examples), else
//!   `<ID>-<VERSION_ID>` (`alpine-3.18.0`, `rhel-8`).
//! - `pypi`: the name normalised as PEP 503 says (the spec's rule too). `npm`: a scope is the
//!   namespace; names are lowercased as the spec requires. `composer`: `vendor/name`, lowercased.
//!   `maven`: `groupId:artifactId` becomes namespace and name. `golang`: the module path's last
//!   segment is the name and the rest the namespace; its case is kept, although the spec says
//!   to lowercase it, because Go module paths are case-sensitive (the module proxy escapes
//!   capitals) and syft, trivy and OSV all keep it. `cargo`, `gem`, `nuget`: the name alone.

use crate::catalog::python;
use crate::{Ecosystem, OsRelease, Package};

/// The package's purl, or an empty string when it has none (a package without a name: no
/// cataloguer produces one). See [`try_purl`].
pub fn purl(p: &Package, os: Option<&OsRelease>) -> String {
    try_purl(p, os).unwrap_or_default()
}

/// The package's purl; `None` when it has no name (empty, or nothing left once the namespace is
/// split off, as in a Go module path `/`): a purl must have one.
pub fn try_purl(p: &Package, os: Option<&OsRelease>) -> Option<String> {
    let os = os.filter(|os| !os.id.trim().is_empty());
    let mut qualifiers: Vec<(&str, String)> = Vec::new();
    let (ty, namespace, name, version): (&str, Vec<String>, String, String) = match p.ecosystem {
        Ecosystem::Deb | Ecosystem::Apk => {
            let (ty, default_vendor) = match p.ecosystem {
                Ecosystem::Deb => ("deb", "debian"),
                _ => ("apk", "alpine"),
            };
            let vendor = os.map_or(default_vendor.to_owned(), |os| os.id.to_lowercase());
            let vendor = segments(&vendor);
            qualifiers.extend(p.arch.clone().map(|a| ("arch", a)));
            qualifiers.extend(os.and_then(distro).map(|d| ("distro", d)));
            qualifiers.extend(upstream(p).map(|u| ("upstream", u)));
            (ty, vendor, p.name.to_lowercase(), p.version.clone())
        }
        Ecosystem::Rpm => {
            let vendor = os
                .map(|os| segments(&rpm_vendor(&os.id)))
                .unwrap_or_default();
            let (epoch, version) = match &p.rpm {
                Some(rpm) => (rpm.epoch, format!("{}-{}", rpm.version, rpm.release)),
                None => split_epoch(&p.version),
            };
            qualifiers.extend(p.arch.clone().map(|a| ("arch", a)));
            qualifiers.extend(os.and_then(distro).map(|d| ("distro", d)));
            qualifiers.extend(epoch.map(|e| ("epoch", e.to_string())));
            let source_rpm = p.rpm.as_ref().and_then(|r| r.source_rpm.clone());
            qualifiers.extend(source_rpm.map(|s| ("upstream", s)));
            ("rpm", vendor, p.name.clone(), version)
        }
        Ecosystem::Pypi => (
            "pypi",
            vec![],
            python::normalize(&p.name),
            p.version.clone(),
        ),
        Ecosystem::Npm => {
            let lower = p.name.to_lowercase();
            let (scope, name) = match lower.split_once('/') {
                Some((scope, name)) if scope.starts_with('@') => (vec![scope.to_owned()], name),
                _ => (vec![], lower.as_str()),
            };
            ("npm", scope, name.to_owned(), p.version.clone())
        }
        Ecosystem::Golang => {
            let path = p.name.trim_matches('/');
            let (namespace, name) = match path.rsplit_once('/') {
                Some((namespace, name)) => (segments(namespace), name),
                None => (vec![], path),
            };
            ("golang", namespace, name.to_owned(), p.version.clone())
        }
        Ecosystem::Maven => {
            let (group, artifact) = match p.name.split_once(':') {
                Some((group, artifact)) => (segments(group), artifact),
                None => (vec![], p.name.as_str()),
            };
            ("maven", group, artifact.to_owned(), p.version.clone())
        }
        Ecosystem::Composer => {
            let lower = p.name.to_lowercase();
            let (vendor, name) = match lower.split_once('/') {
                Some((vendor, name)) => (segments(vendor), name.to_owned()),
                None => (vec![], lower.clone()),
            };
            ("composer", vendor, name, p.version.clone())
        }
        Ecosystem::Cargo => ("cargo", vec![], p.name.clone(), p.version.clone()),
        Ecosystem::Gem => ("gem", vec![], p.name.clone(), p.version.clone()),
        Ecosystem::Nuget => ("nuget", vec![], p.name.clone(), p.version.clone()),
    };
    build(ty, &namespace, &name, Some(&version), qualifiers)
}

/// The purl of an OCI image (or any artifact) by digest: `pkg:oci/<name>@<digest>`, where the
/// name is the repository's last segment, lowercased, and `repository_url` the repository as
/// given (with the registry's host when the caller includes it).
pub fn oci(repository: &str, digest: &str, tag: Option<&str>) -> Option<String> {
    let repository = repository.trim_matches('/');
    let name = repository.rsplit('/').next().unwrap_or(repository);
    let mut qualifiers = vec![("repository_url", repository.to_owned())];
    qualifiers.extend(tag.map(|t| ("tag", t.to_owned())));
    build("oci", &[], &name.to_lowercase(), Some(digest), qualifiers)
}

/// A canonical purl from its parts; `None` without a name.
fn build(
    ty: &str,
    namespace: &[String],
    name: &str,
    version: Option<&str>,
    mut qualifiers: Vec<(&str, String)>,
) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let mut out = format!("pkg:{ty}/");
    for segment in namespace {
        encode_into(&mut out, segment);
        out.push('/');
    }
    encode_into(&mut out, name);
    if let Some(version) = version.filter(|v| !v.is_empty()) {
        out.push('@');
        encode_into(&mut out, version);
    }
    // An empty value means "not set" to purl parsers; the keys are ours, already lowercase.
    qualifiers.retain(|(_, value)| !value.is_empty());
    qualifiers.sort_by(|a, b| a.0.cmp(b.0));
    for (i, (key, value)) in qualifiers.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(key);
        out.push('=');
        encode_into(&mut out, value);
    }
    Some(out)
}

/// Percent-encodes every byte outside the characters a canonical purl keeps as they are.
fn encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// A namespace's segments, without the empty, `.` and `..` segments that purl parsers drop.
fn segments(namespace: &str) -> Vec<String> {
    namespace
        .split('/')
        .filter(|s| !s.is_empty() && *s != "." && *s != "..")
        .map(str::to_owned)
        .collect()
}

/// The `distro` qualifier: the codename, else `<ID>-<VERSION_ID>`, else `<ID>`.
fn distro(os: &OsRelease) -> Option<String> {
    if let Some(codename) = nonempty(&os.version_codename) {
        return Some(codename.to_owned());
    }
    let id = os.id.trim().to_lowercase();
    Some(match nonempty(&os.version_id) {
        Some(version) => format!("{id}-{version}"),
        None => id,
    })
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// `upstream` for deb and apk: the source package when it is not the binary itself.
fn upstream(p: &Package) -> Option<String> {
    let source = p.source.as_ref()?;
    if source.name.is_empty() {
        return None;
    }
    if !source.version.is_empty() && source.version != p.version {
        Some(format!("{}@{}", source.name, source.version))
    } else if source.name != p.name {
        Some(source.name.clone())
    } else {
        None
    }
}

/// The rpm namespace for an os-release `ID`, as syft (and Red Hat's own SBOMs) name vendors.
fn rpm_vendor(id: &str) -> String {
    let id = id.to_lowercase();
    if id == "rhel" {
        "redhat".to_owned()
    } else if id.starts_with("opensuse") {
        "opensuse".to_owned()
    } else {
        id
    }
}

/// `[epoch:]version-release` apart, for an rpm package without its header's parts.
fn split_epoch(evr: &str) -> (Option<u32>, String) {
    match evr.split_once(':') {
        Some((epoch, rest)) => match epoch.parse() {
            Ok(epoch) => (Some(epoch), rest.to_owned()),
            Err(_) => (None, evr.to_owned()),
        },
        None => (None, evr.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use proptest::prelude::*;

    use super::*;
    use crate::{RpmVersion, SourcePackage};

    fn os(id: &str, version_id: Option<&str>, codename: Option<&str>) -> OsRelease {
        OsRelease {
            id: id.into(),
            version_id: version_id.map(Into::into),
            version_codename: codename.map(Into::into),
            pretty_name: None,
        }
    }

    fn pkg(ecosystem: Ecosystem, name: &str, version: &str) -> Package {
        Package::new(ecosystem, name, version, "x")
    }

    fn with_source(mut p: Package, name: &str, version: &str, arch: &str) -> Package {
        p.source = Some(SourcePackage {
            name: name.into(),
            version: version.into(),
        });
        p.arch = Some(arch.into());
        p
    }

    #[test]
    fn deb() {
        let bookworm = os("debian", Some("12"), Some("bookworm"));
        let cases = [
            // The source is the binary itself: no upstream.
            (
                with_source(
                    pkg(Ecosystem::Deb, "acl", "2.3.1-3"),
                    "acl",
                    "2.3.1-3",
                    "amd64",
                ),
                "pkg:deb/debian/acl@2.3.1-3?arch=amd64&distro=bookworm",
            ),
            (
                with_source(
                    pkg(Ecosystem::Deb, "libacl1", "2.3.1-3"),
                    "acl",
                    "2.3.1-3",
                    "amd64",
                ),
                "pkg:deb/debian/libacl1@2.3.1-3?arch=amd64&distro=bookworm&upstream=acl",
            ),
            // A binNMU: `+` encoded, and the source's own version in upstream.
            (
                with_source(
                    pkg(Ecosystem::Deb, "util-linux-extra", "2.38.1-5+b1"),
                    "util-linux",
                    "2.38.1-5",
                    "amd64",
                ),
                "pkg:deb/debian/util-linux-extra@2.38.1-5%2Bb1?arch=amd64&distro=bookworm\
                 &upstream=util-linux%402.38.1-5",
            ),
            // An epoch's colon is not encoded.
            (
                with_source(
                    pkg(Ecosystem::Deb, "attr", "1:2.5.1-4"),
                    "attr",
                    "1:2.5.1-4",
                    "amd64",
                ),
                "pkg:deb/debian/attr@1:2.5.1-4?arch=amd64&distro=bookworm",
            ),
        ];
        for (p, want) in cases {
            assert_eq!(purl(&p, Some(&bookworm)), want);
        }
        // Without a codename, ID-VERSION_ID; without os-release, debian and no distro.
        let bionic = os("ubuntu", Some("18.04"), None);
        let p = with_source(
            pkg(Ecosystem::Deb, "bash", "4.4.18-2ubuntu1"),
            "bash",
            "",
            "amd64",
        );
        assert_eq!(
            purl(&p, Some(&bionic)),
            "pkg:deb/ubuntu/bash@4.4.18-2ubuntu1?arch=amd64&distro=ubuntu-18.04"
        );
        assert_eq!(
            purl(&p, None),
            "pkg:deb/debian/bash@4.4.18-2ubuntu1?arch=amd64"
        );
    }

    #[test]
    fn apk() {
        let alpine = os("alpine", Some("3.18.0"), None);
        let p = with_source(
            pkg(Ecosystem::Apk, "libcrypto3", "3.1.0-r4"),
            "openssl",
            "3.1.0-r4",
            "x86_64",
        );
        assert_eq!(
            purl(&p, Some(&alpine)),
            "pkg:apk/alpine/libcrypto3@3.1.0-r4?arch=x86_64&distro=alpine-3.18.0&upstream=openssl"
        );
        let wolfi = os("wolfi", Some("20230201"), None);
        let p = with_source(
            pkg(Ecosystem::Apk, "glibc", "2.38-r1"),
            "glibc",
            "2.38-r1",
            "aarch64",
        );
        assert_eq!(
            purl(&p, Some(&wolfi)),
            "pkg:apk/wolfi/glibc@2.38-r1?arch=aarch64&distro=wolfi-20230201"
        );
    }

    #[test]
    fn rpm() {
        let mut p = pkg(Ecosystem::Rpm, "libuuid", "2.32.1-42.el8_8");
        p.arch = Some("x86_64".into());
        p.rpm = Some(RpmVersion {
            epoch: None,
            version: "2.32.1".into(),
            release: "42.el8_8".into(),
            source_rpm: Some("util-linux-2.32.1-42.el8_8.src.rpm".into()),
        });
        assert_eq!(
            purl(&p, Some(&os("rhel", Some("8.8"), None))),
            "pkg:rpm/redhat/libuuid@2.32.1-42.el8_8?arch=x86_64&distro=rhel-8.8\
             &upstream=util-linux-2.32.1-42.el8_8.src.rpm"
        );
        // The epoch is a qualifier, never in the version.
        let mut p = pkg(Ecosystem::Rpm, "perl-Digest", "1:1.17-395.fc32");
        p.arch = Some("noarch".into());
        p.rpm = Some(RpmVersion {
            epoch: Some(1),
            version: "1.17".into(),
            release: "395.fc32".into(),
            source_rpm: None,
        });
        let want = "pkg:rpm/fedora/perl-Digest@1.17-395.fc32?arch=noarch&distro=fedora-32&epoch=1";
        assert_eq!(purl(&p, Some(&os("fedora", Some("32"), None))), want);
        p.rpm = None;
        assert_eq!(purl(&p, Some(&os("fedora", Some("32"), None))), want);
        assert_eq!(
            purl(&p, Some(&os("opensuse-leap", Some("15.5"), None))),
            "pkg:rpm/opensuse/perl-Digest@1.17-395.fc32?arch=noarch&distro=opensuse-leap-15.5\
             &epoch=1"
        );
        // No os-release: no vendor namespace (the spec's own example has none).
        assert_eq!(
            purl(&p, None),
            "pkg:rpm/perl-Digest@1.17-395.fc32?arch=noarch&epoch=1"
        );
    }

    #[test]
    fn languages() {
        let cases = [
            (
                Ecosystem::Pypi,
                "Django_Allauth",
                "0.50",
                "pkg:pypi/django-allauth@0.50",
            ),
            (
                Ecosystem::Pypi,
                "zope.interface",
                "6.0",
                "pkg:pypi/zope-interface@6.0",
            ),
            (
                Ecosystem::Npm,
                "@Angular/core",
                "16.0.0",
                "pkg:npm/%40angular/core@16.0.0",
            ),
            (
                Ecosystem::Npm,
                "JSONStream",
                "1.3.5",
                "pkg:npm/jsonstream@1.3.5",
            ),
            (
                Ecosystem::Golang,
                "github.com/BurntSushi/toml",
                "v1.3.2",
                "pkg:golang/github.com/BurntSushi/toml@v1.3.2",
            ),
            (
                Ecosystem::Golang,
                "golang.org/x/net",
                "v0.17.0+incompatible",
                "pkg:golang/golang.org/x/net@v0.17.0%2Bincompatible",
            ),
            (
                Ecosystem::Golang,
                "stdlib",
                "1.21.0",
                "pkg:golang/stdlib@1.21.0",
            ),
            (
                Ecosystem::Cargo,
                "serde_json",
                "1.0.108",
                "pkg:cargo/serde_json@1.0.108",
            ),
            (
                Ecosystem::Maven,
                "com.google.guava:guava",
                "29.0-jre",
                "pkg:maven/com.google.guava/guava@29.0-jre",
            ),
            (
                Ecosystem::Gem,
                "nokogiri",
                "1.15.4",
                "pkg:gem/nokogiri@1.15.4",
            ),
            (
                Ecosystem::Composer,
                "Symfony/Console",
                "v6.3.4",
                "pkg:composer/symfony/console@v6.3.4",
            ),
            (
                Ecosystem::Nuget,
                "Newtonsoft.Json",
                "13.0.3",
                "pkg:nuget/Newtonsoft.Json@13.0.3",
            ),
            // Reserved and non-ASCII characters, and spaces, are percent-encoded (UTF-8).
            (
                Ecosystem::Cargo,
                "a/b c",
                "1.0 (x)",
                "pkg:cargo/a%2Fb%20c@1.0%20%28x%29",
            ),
            (
                Ecosystem::Gem,
                "é?#&",
                "1@2",
                "pkg:gem/%C3%A9%3F%23%26@1%402",
            ),
        ];
        for (ecosystem, name, version, want) in cases {
            assert_eq!(purl(&pkg(ecosystem, name, version), None), want, "{name}");
        }
    }

    #[test]
    fn no_name_no_purl() {
        assert_eq!(try_purl(&pkg(Ecosystem::Cargo, "", "1"), None), None);
        assert_eq!(purl(&pkg(Ecosystem::Golang, "/", "1"), None), "");
        // No version: no `@`.
        assert_eq!(purl(&pkg(Ecosystem::Npm, "x", ""), None), "pkg:npm/x");
    }

    fn ecosystems() -> impl Strategy<Value = Ecosystem> {
        prop::sample::select(vec![
            Ecosystem::Deb,
            Ecosystem::Apk,
            Ecosystem::Rpm,
            Ecosystem::Pypi,
            Ecosystem::Npm,
            Ecosystem::Golang,
            Ecosystem::Cargo,
            Ecosystem::Maven,
            Ecosystem::Gem,
            Ecosystem::Composer,
            Ecosystem::Nuget,
        ])
    }

    proptest! {
        /// Whatever the names, a purl written here parses back (with an independent parser,
        /// the `packageurl` crate) to components that write the same purl again, and the name
        /// and version come back as given where the type does not normalise them.
        #[test]
        fn purls_parse_back(
            ecosystem in ecosystems(),
            name in any::<String>(),
            version in any::<String>(),
            arch in proptest::option::of(any::<String>()),
            source in proptest::option::of((any::<String>(), any::<String>())),
            os_id in proptest::option::of(any::<String>()),
            version_id in proptest::option::of(any::<String>()),
        ) {
            let mut p = pkg(ecosystem, &name, &version);
            p.arch = arch;
            p.source = source.map(|(name, version)| SourcePackage { name, version });
            let os = os_id.map(|id| os(&id, version_id.as_deref(), None));
            let Some(written) = try_purl(&p, os.as_ref()) else {
                return Ok(());
            };
            let parsed = match packageurl::PackageUrl::from_str(&written) {
                Ok(parsed) => parsed,
                // The spec requires a vendor for composer; a name without one has no valid purl.
                Err(_) if written.matches('/').count() == 1 && ecosystem == Ecosystem::Composer => {
                    return Ok(());
                }
                Err(e) => return Err(TestCaseError::fail(format!("{written}: {e}"))),
            };
            let mut namespace: Vec<String> = parsed.namespace().map(segments).unwrap_or_default();
            // The parser lowercases a golang namespace (when it has a capital), which is kept
            // as written here.
            if ecosystem == Ecosystem::Golang {
                let path = name.trim_matches('/');
                let ours = path.rsplit_once('/').map(|(ns, _)| segments(ns)).unwrap_or_default();
                let joined = ours.join("/");
                let lowered = if joined.chars().any(char::is_uppercase) {
                    joined.to_lowercase()
                } else {
                    joined
                };
                prop_assert_eq!(namespace.join("/"), lowered);
                namespace = ours;
            }
            let mut qualifiers: Vec<(&str, String)> = parsed
                .qualifiers()
                .iter()
                .map(|(k, v)| (k.as_ref(), v.to_string()))
                .collect();
            qualifiers.sort();
            let again =
                build(parsed.ty(), &namespace, parsed.name(), parsed.version(), qualifiers);
            prop_assert_eq!(again.as_deref(), Some(written.as_str()));
            if matches!(ecosystem, Ecosystem::Cargo | Ecosystem::Gem | Ecosystem::Nuget) {
                prop_assert_eq!(parsed.name(), name.as_str());
            }
            if ecosystem != Ecosystem::Rpm && !version.is_empty() {
                prop_assert_eq!(parsed.version(), Some(version.as_str()));
            }
        }
    }

    #[test]
    fn oci_purl() {
        let digest = "sha256:244fd47e07d1004f0aed9c";
        assert_eq!(
            oci("registry.example.com/team/App", digest, Some("v1")).unwrap(),
            "pkg:oci/app@sha256:244fd47e07d1004f0aed9c\
             ?repository_url=registry.example.com%2Fteam%2FApp&tag=v1"
        );
        assert_eq!(
            oci("debian", digest, None).unwrap(),
            "pkg:oci/debian@sha256:244fd47e07d1004f0aed9c?repository_url=debian"
        );
    }
}
