//! SBOM documents made from an image's inventory: SPDX 2.3 and CycloneDX 1.6, both JSON, as
//! pure functions of the inventory and a [`Subject`] (the image, and the creation time and
//! UUID the caller chose, so that the same inputs give the same document).
//!
//! Both describe the image as the root: a package (SPDX) or the metadata component (CycloneDX)
//! named by the repository, versioned by the manifest digest, with an `oci` purl and the digest
//! as its checksum. The distribution from os-release is a package of its own (an
//! `operating-system` component), as syft writes it; then one package per inventory package,
//! with its purl, the file and layer it was read from, and its licence where the metadata
//! states one that can be said in SPDX terms.
//!
//! Licences are conservative: a package's licence strings go into `licenseDeclared` only when
//! there is exactly one and it is a valid SPDX expression of listed identifiers (strict
//! syntax: no deprecated ids, no `/` for OR, operators in capitals, no `LicenseRef-`, which an
//! SPDX document must define before it uses it); otherwise `NOASSERTION`, because several
//! strings do not say whether they are meant with AND or OR. `licenseConcluded` is always
//! `NOASSERTION`: Berth reads what the metadata declares and concludes nothing. CycloneDX has
//! room for free text, so each string is kept there: as `license.id` when it is one SPDX
//! identifier, as an `expression` when it is the only one and a compound valid expression,
//! else as `license.name`.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::{Coverage, Ecosystem, Inventory, OsRelease, Package, purl};

/// The image an SBOM describes, and what makes each document unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The repository as clients pull it; include the registry's host
    /// (`registry.example.com/team/app`) to make the image's purl `repository_url` complete.
    pub repository: String,
    /// The manifest digest, `sha256:<hex>`.
    pub digest: String,
    /// Tags pointing at the digest when the document was made (the first goes in the purl).
    pub tags: Vec<String>,
    /// The document's creation time, RFC 3339 (written in UTC, to the second, as SPDX asks).
    pub created: String,
    /// A random UUID, lowercase (`urn:uuid:` serial number, part of the SPDX namespace).
    pub uuid: String,
    /// Berth's version, for the creator/tool fields.
    pub tool_version: String,
}

/// SPDX document namespaces live under this base. A self-hosted registry has no domain of its
/// own that a pure function could know, and the namespace is an identifier, not a location:
/// `.invalid` (RFC 2606) is reserved never to resolve, so it can claim nobody's domain.
const SPDX_NAMESPACE_BASE: &str = "https://berth.invalid/spdx/";

const NOASSERTION: &str = "NOASSERTION";
const IMAGE_SPDX_ID: &str = "SPDXRef-Image";
const OS_SPDX_ID: &str = "SPDXRef-OperatingSystem";
/// SPDX ids carry the package's name for readability; past this many bytes it is cut.
const MAX_ID_NAME: usize = 80;

/// The SPDX 2.3 JSON document for `inv`.
pub fn spdx(inv: &Inventory, subject: &Subject) -> Value {
    let tag = subject.tags.first().map(String::as_str);
    let mut image = json!({
        "SPDXID": IMAGE_SPDX_ID,
        "name": subject.repository,
        "versionInfo": subject.digest,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
    });
    if let Some((algorithm, hex)) = digest_checksum(&subject.digest) {
        image["checksums"] = json!([{ "algorithm": algorithm.spdx, "checksumValue": hex }]);
    }
    if let Some(purl) = purl::oci(&subject.repository, &subject.digest, tag) {
        image["externalRefs"] = json!([purl_ref(&purl)]);
    }

    let mut packages = vec![image];
    let mut relationships = vec![relationship("SPDXRef-DOCUMENT", "DESCRIBES", IMAGE_SPDX_ID)];
    if let Some(os) = &inv.os {
        let mut package = json!({
            "SPDXID": OS_SPDX_ID,
            "name": os.id,
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": false,
            "primaryPackagePurpose": "OPERATING-SYSTEM",
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": NOASSERTION,
            "copyrightText": NOASSERTION,
        });
        if let Some(version) = os.version_id.as_deref().filter(|v| !v.is_empty()) {
            package["versionInfo"] = json!(version);
        }
        if let Some(pretty) = os.pretty_name.as_deref().filter(|v| !v.is_empty()) {
            package["description"] = json!(pretty);
        }
        packages.push(package);
        relationships.push(relationship(IMAGE_SPDX_ID, "CONTAINS", OS_SPDX_ID));
    }
    for (n, p) in inv.packages.iter().enumerate() {
        let id = spdx_id(n + 1, p);
        let mut package = json!({
            "SPDXID": id,
            "name": p.name,
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": false,
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": spdx_license(&p.licenses).unwrap_or_else(|| NOASSERTION.into()),
            "copyrightText": NOASSERTION,
            "sourceInfo": source_info(p),
        });
        if !p.version.is_empty() {
            package["versionInfo"] = json!(p.version);
        }
        if let Some(purl) = purl::try_purl(p, inv.os.as_ref()) {
            package["externalRefs"] = json!([purl_ref(&purl)]);
        }
        packages.push(package);
        relationships.push(relationship(IMAGE_SPDX_ID, "CONTAINS", &id));
    }

    let mut creation_info = json!({
        "created": timestamp(&subject.created),
        "creators": [format!("Tool: berth-{}", subject.tool_version)],
    });
    if let Some(comment) = coverage_comment(&inv.coverage) {
        creation_info["comment"] = json!(comment);
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}@{}", subject.repository, subject.digest),
        "documentNamespace": spdx_namespace(subject),
        "creationInfo": creation_info,
        "packages": packages,
        "relationships": relationships,
    })
}

/// The CycloneDX 1.6 JSON document for `inv`.
pub fn cyclonedx(inv: &Inventory, subject: &Subject) -> Value {
    const IMAGE_REF: &str = "image";
    const OS_REF: &str = "operating-system";
    let mut used: HashSet<String> = [IMAGE_REF, OS_REF].into_iter().map(Into::into).collect();

    let tag = subject.tags.first().map(String::as_str);
    let mut image = json!({
        "type": "container",
        "bom-ref": IMAGE_REF,
        "name": subject.repository,
        "version": subject.digest,
    });
    if let Some(purl) = purl::oci(&subject.repository, &subject.digest, tag) {
        image["purl"] = json!(purl);
    }
    if let Some((algorithm, hex)) = digest_checksum(&subject.digest) {
        image["hashes"] = json!([{ "alg": algorithm.cyclonedx, "content": hex }]);
    }
    let tags: Vec<Value> = subject
        .tags
        .iter()
        .map(|t| property("berth:image:tag", t))
        .collect();
    if !tags.is_empty() {
        image["properties"] = json!(tags);
    }

    let mut components = Vec::new();
    if let Some(os) = &inv.os {
        components.push(os_component(os, OS_REF));
    }
    for (n, p) in inv.packages.iter().enumerate() {
        let purl = purl::try_purl(p, inv.os.as_ref());
        // A purl is the most useful reference (VEX documents point at components by it); the
        // same package found twice (a jar copied into two places) gets its path, then a number.
        let candidates = [
            purl.clone(),
            purl.as_ref().map(|u| format!("{u}|/{}", p.path)),
        ];
        let bom_ref = candidates
            .into_iter()
            .flatten()
            .find(|r| !used.contains(r))
            .unwrap_or_else(|| format!("package-{}", n + 1));
        used.insert(bom_ref.clone());

        let (group, name) = match (p.ecosystem, p.name.split_once(':')) {
            (Ecosystem::Maven, Some((group, artifact))) => (Some(group), artifact),
            _ => (None, p.name.as_str()),
        };
        let mut component = json!({ "type": "library", "bom-ref": bom_ref, "name": name });
        if let Some(group) = group {
            component["group"] = json!(group);
        }
        if !p.version.is_empty() {
            component["version"] = json!(p.version);
        }
        if let Some(purl) = purl {
            component["purl"] = json!(purl);
        }
        let licenses = cyclonedx_licenses(&p.licenses);
        if !licenses.is_empty() {
            component["licenses"] = json!(licenses);
        }
        component["properties"] = json!(package_properties(p));
        components.push(component);
    }

    let mut metadata = json!({
        "timestamp": timestamp(&subject.created),
        "tools": { "components": [{
            "type": "application",
            "name": "berth",
            "version": subject.tool_version,
        }]},
        "component": image,
    });
    let coverage = coverage_properties(&inv.coverage);
    if !coverage.is_empty() {
        metadata["properties"] = json!(coverage);
    }
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", subject.uuid.to_lowercase()),
        "version": 1,
        "metadata": metadata,
        "components": components,
    })
}

/// `SPDXRef-Package-<n>-<ecosystem>-<name>`, with every character SPDX ids do not allow
/// (anything but letters, digits, `.` and `-`) made `-`. `n` makes it unique.
pub fn spdx_id(n: usize, p: &Package) -> String {
    let ecosystem = serde_json::to_value(p.ecosystem)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut id = format!("SPDXRef-Package-{n}-{ecosystem}-");
    let name: String = p
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_ID_NAME)
        .collect();
    id.push_str(&name);
    id
}

/// The SPDX licence expression for a package's licence strings, when there is exactly one and
/// it is strictly valid (see the module comment); `None` otherwise.
pub fn spdx_license(licenses: &[String]) -> Option<String> {
    let mut distinct: Vec<&str> = licenses.iter().map(|l| l.trim()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    match distinct.as_slice() {
        [one] if is_strict_spdx(one) => Some((*one).to_owned()),
        _ => None,
    }
}

/// Whether `text` parses as an SPDX expression of listed, current license and exception ids,
/// with its operators in capitals (SPDX says they are case-sensitive; the parser here is not).
fn is_strict_spdx(text: &str) -> bool {
    use spdx::lexer::{Lexer, Token};
    if text.is_empty() || spdx::Expression::parse_mode(text, spdx::ParseMode::STRICT).is_err() {
        return false;
    }
    Lexer::new_mode(text, spdx::ParseMode::STRICT).all(|token| match token {
        Ok(t) => match t.token {
            Token::Spdx(_) | Token::Exception(_) | Token::Plus => true,
            Token::OpenParen | Token::CloseParen => true,
            Token::And | Token::Or | Token::With => text
                .get(t.span)
                .is_some_and(|op| op.bytes().all(|b| b.is_ascii_uppercase())),
            _ => false,
        },
        Err(_) => false,
    })
}

/// CycloneDX `licenses` for a package's licence strings (see the module comment).
fn cyclonedx_licenses(licenses: &[String]) -> Vec<Value> {
    let mut distinct: Vec<&str> = licenses
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    if let [one] = distinct.as_slice()
        && is_strict_spdx(one)
        && single_id(one).is_none()
    {
        return vec![json!({ "expression": one })];
    }
    distinct
        .into_iter()
        .map(|l| match single_id(l) {
            Some(id) => json!({ "license": { "id": id } }),
            None => json!({ "license": { "name": l } }),
        })
        .collect()
}

/// `text` when it is exactly one current SPDX licence id (`license_id` alone would also take
/// `MIT+`, dropping the `+`).
fn single_id(text: &str) -> Option<&'static str> {
    spdx::license_id(text)
        .filter(|id| id.name == text && !id.is_deprecated())
        .map(|id| id.name)
}

/// The `operating-system` component for the image's distribution.
fn os_component(os: &OsRelease, bom_ref: &str) -> Value {
    let mut component = json!({ "type": "operating-system", "bom-ref": bom_ref, "name": os.id });
    if let Some(version) = os.version_id.as_deref().filter(|v| !v.is_empty()) {
        component["version"] = json!(version);
    }
    if let Some(pretty) = os.pretty_name.as_deref().filter(|v| !v.is_empty()) {
        component["description"] = json!(pretty);
    }
    if let Some(codename) = os.version_codename.as_deref().filter(|v| !v.is_empty()) {
        component["properties"] = json!([property("berth:distro:codename", codename)]);
    }
    component
}

/// Where a package was found and what it belongs to, as CycloneDX properties.
fn package_properties(p: &Package) -> Vec<Value> {
    let mut properties = vec![
        property("berth:package:ecosystem", &ecosystem_name(p.ecosystem)),
        property("berth:package:path", &format!("/{}", p.path)),
    ];
    if let Some(layer) = p.layer {
        properties.push(property("berth:package:layer", &layer.to_string()));
    }
    if let Some(arch) = p.arch.as_deref().filter(|a| !a.is_empty()) {
        properties.push(property("berth:package:arch", arch));
    }
    if let Some(source) = &p.source {
        properties.push(property("berth:package:source-name", &source.name));
        properties.push(property("berth:package:source-version", &source.version));
    }
    properties
}

/// The SPDX `sourceInfo` line: which file (and layer) the package was read from.
fn source_info(p: &Package) -> String {
    let what = match p.ecosystem {
        Ecosystem::Deb => "the dpkg database",
        Ecosystem::Apk => "the apk database",
        Ecosystem::Rpm => "the rpm database",
        Ecosystem::Pypi => "Python package metadata",
        Ecosystem::Npm => "a package.json",
        Ecosystem::Golang => "Go build information",
        Ecosystem::Cargo => "Cargo dependency data",
        Ecosystem::Maven => "a Java archive",
        Ecosystem::Gem => "a gem specification",
        Ecosystem::Composer => "Composer's installed.json",
        Ecosystem::Nuget => ".NET dependency data",
    };
    match p.layer {
        Some(layer) => format!(
            "acquired package info from {what}: /{} (layer {layer} of the manifest)",
            p.path
        ),
        None => format!("acquired package info from {what}: /{}", p.path),
    }
}

fn ecosystem_name(ecosystem: Ecosystem) -> String {
    serde_json::to_value(ecosystem)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn coverage_comment(coverage: &Coverage) -> Option<String> {
    match coverage {
        Coverage::Complete => None,
        Coverage::Incomplete { missing_layers } => Some(format!(
            "Incomplete: the registry does not hold {} of the image's layers ({}); what they \
             contain is not listed.",
            missing_layers.len(),
            missing_layers.join(", ")
        )),
        Coverage::NotScannable { reason } => Some(format!("Not scannable: {reason}")),
    }
}

fn coverage_properties(coverage: &Coverage) -> Vec<Value> {
    match coverage {
        Coverage::Complete => vec![property("berth:coverage", "complete")],
        Coverage::Incomplete { missing_layers } => {
            let mut out = vec![property("berth:coverage", "incomplete")];
            out.extend(
                missing_layers
                    .iter()
                    .map(|l| property("berth:coverage:missing-layer", l)),
            );
            out
        }
        Coverage::NotScannable { reason } => vec![
            property("berth:coverage", "not_scannable"),
            property("berth:coverage:reason", reason),
        ],
    }
}

fn property(name: &str, value: &str) -> Value {
    json!({ "name": name, "value": value })
}

fn relationship(from: &str, kind: &str, to: &str) -> Value {
    json!({ "spdxElementId": from, "relationshipType": kind, "relatedSpdxElement": to })
}

fn purl_ref(purl: &str) -> Value {
    json!({
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": purl,
    })
}

struct Algorithm {
    spdx: &'static str,
    cyclonedx: &'static str,
}

/// The digest as a checksum, when it is a well-formed sha256 or sha512 digest.
fn digest_checksum(digest: &str) -> Option<(Algorithm, &str)> {
    let (algorithm, hex) = digest.split_once(':')?;
    let (algorithm, len) = match algorithm {
        "sha256" => (
            Algorithm {
                spdx: "SHA256",
                cyclonedx: "SHA-256",
            },
            64,
        ),
        "sha512" => (
            Algorithm {
                spdx: "SHA512",
                cyclonedx: "SHA-512",
            },
            128,
        ),
        _ => return None,
    };
    let well_formed =
        hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    well_formed.then_some((algorithm, hex))
}

/// `https://berth.invalid/spdx/<repository>@<digest>/<uuid>`, each part percent-encoded where
/// a URI path would not take it as it is.
fn spdx_namespace(subject: &Subject) -> String {
    let mut out = SPDX_NAMESPACE_BASE.to_owned();
    uri_encode_into(&mut out, subject.repository.trim_matches('/'), b"/");
    out.push('@');
    uri_encode_into(&mut out, &subject.digest, b":");
    out.push('/');
    uri_encode_into(&mut out, &subject.uuid.to_lowercase(), b"");
    out
}

/// Percent-encodes all but RFC 3986 unreserved characters and `keep`.
fn uri_encode_into(out: &mut String, s: &str, keep: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') || keep.contains(&b)
        {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// `created` in UTC to the second (`2024-05-01T12:00:00Z`), the form SPDX requires; a string
/// that is not RFC 3339 is kept as it is.
fn timestamp(created: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(created.trim())
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
        .unwrap_or_else(|_| created.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RpmVersion, SourcePackage};
    use proptest::prelude::*;

    const DIGEST: &str = "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b";

    fn subject() -> Subject {
        Subject {
            repository: "registry.example.com/team/app".into(),
            digest: DIGEST.into(),
            tags: vec!["1.0".into(), "latest".into()],
            created: "2024-05-01T14:00:00.123456+02:00".into(),
            uuid: "3F2504E0-4F89-41D3-9A0C-0305E82C3301".into(),
            tool_version: "0.1.0".into(),
        }
    }

    fn inventory() -> Inventory {
        let mut deb = Package::new(Ecosystem::Deb, "libacl1", "2.3.1-3", "var/lib/dpkg/status");
        deb.source = Some(SourcePackage {
            name: "acl".into(),
            version: "2.3.1-3".into(),
        });
        deb.arch = Some("amd64".into());
        deb.layer = Some(0);
        deb.licenses = vec!["GPL-2.0-or-later AND LGPL-2.1-or-later".into()];
        let mut jar = Package::new(
            Ecosystem::Maven,
            "com.google.guava:guava",
            "29.0-jre",
            "app/lib/guava.jar",
        );
        jar.layer = Some(2);
        jar.licenses = vec!["Apache-2.0".into()];
        let mut copy = jar.clone();
        copy.path = "app/other/guava.jar".into();
        let mut rpm = Package::new(
            Ecosystem::Rpm,
            "bash",
            "5.1.8-6.el9",
            "var/lib/rpm/rpmdb.sqlite",
        );
        rpm.licenses = vec!["GPLv3+".into()];
        rpm.rpm = Some(RpmVersion {
            epoch: None,
            version: "5.1.8".into(),
            release: "6.el9".into(),
            source_rpm: Some("bash-5.1.8-6.el9.src.rpm".into()),
        });
        let mut npm = Package::new(Ecosystem::Npm, "@babel/core", "7.23.0", "n/package.json");
        npm.licenses = vec!["MIT".into(), "Apache-2.0".into()];
        Inventory {
            coverage: Coverage::Complete,
            os: Some(OsRelease {
                id: "debian".into(),
                version_id: Some("12".into()),
                version_codename: Some("bookworm".into()),
                pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
            }),
            packages: vec![deb, jar, copy, rpm, npm],
            skipped: vec![],
            errors: vec![],
        }
    }

    fn valid_spdx_id(id: &str) -> bool {
        id.strip_prefix("SPDXRef-").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
    }

    #[test]
    fn spdx_document() {
        let doc = spdx(&inventory(), &subject());
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(doc["dataLicense"], "CC0-1.0");
        assert_eq!(doc["SPDXID"], "SPDXRef-DOCUMENT");
        assert_eq!(
            doc["name"],
            format!("registry.example.com/team/app@{DIGEST}")
        );
        assert_eq!(
            doc["documentNamespace"],
            format!(
                "https://berth.invalid/spdx/registry.example.com/team/app@{DIGEST}/\
                 3f2504e0-4f89-41d3-9a0c-0305e82c3301"
            )
        );
        assert_eq!(doc["creationInfo"]["created"], "2024-05-01T12:00:00Z");
        assert_eq!(
            doc["creationInfo"]["creators"],
            json!(["Tool: berth-0.1.0"])
        );

        let packages = doc["packages"].as_array().unwrap();
        assert_eq!(packages.len(), 7, "image, os and five packages");
        let ids: Vec<&str> = packages
            .iter()
            .map(|p| p["SPDXID"].as_str().unwrap())
            .collect();
        assert!(ids.iter().all(|id| valid_spdx_id(id)), "{ids:?}");
        assert_eq!(
            ids.iter().collect::<HashSet<_>>().len(),
            ids.len(),
            "{ids:?}"
        );
        for p in packages {
            assert_eq!(p["downloadLocation"], NOASSERTION);
            assert_eq!(p["licenseConcluded"], NOASSERTION);
            assert!(p["name"].is_string());
        }

        let image = &packages[0];
        assert_eq!(image["SPDXID"], IMAGE_SPDX_ID);
        assert_eq!(image["primaryPackagePurpose"], "CONTAINER");
        assert_eq!(
            image["checksums"],
            json!([{ "algorithm": "SHA256", "checksumValue": &DIGEST[7..] }])
        );
        assert_eq!(
            image["externalRefs"][0]["referenceLocator"],
            format!(
                "pkg:oci/app@{DIGEST}?repository_url=registry.example.com%2Fteam%2Fapp&tag=1.0"
            )
        );
        assert_eq!(packages[1]["primaryPackagePurpose"], "OPERATING-SYSTEM");
        assert_eq!(packages[1]["name"], "debian");
        assert_eq!(packages[1]["versionInfo"], "12");

        let deb = &packages[2];
        assert_eq!(deb["SPDXID"], "SPDXRef-Package-1-deb-libacl1");
        assert_eq!(deb["versionInfo"], "2.3.1-3");
        assert_eq!(
            deb["licenseDeclared"],
            "GPL-2.0-or-later AND LGPL-2.1-or-later"
        );
        assert_eq!(
            deb["externalRefs"],
            json!([{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator":
                    "pkg:deb/debian/libacl1@2.3.1-3?arch=amd64&distro=bookworm&upstream=acl",
            }])
        );
        assert_eq!(
            deb["sourceInfo"],
            "acquired package info from the dpkg database: /var/lib/dpkg/status \
             (layer 0 of the manifest)"
        );
        assert_eq!(
            packages[3]["SPDXID"],
            "SPDXRef-Package-2-maven-com.google.guava-guava"
        );
        assert_eq!(packages[3]["licenseDeclared"], "Apache-2.0");
        // Not SPDX, or two strings whose relation is unknown: no assertion.
        assert_eq!(packages[5]["licenseDeclared"], NOASSERTION);
        assert_eq!(packages[6]["licenseDeclared"], NOASSERTION);
        assert_eq!(
            packages[5]["sourceInfo"],
            "acquired package info from the rpm database: /var/lib/rpm/rpmdb.sqlite"
        );

        let relationships = doc["relationships"].as_array().unwrap();
        assert_eq!(relationships.len(), 1 + 1 + 5);
        assert_eq!(
            relationships[0],
            relationship("SPDXRef-DOCUMENT", "DESCRIBES", IMAGE_SPDX_ID)
        );
        for (r, id) in relationships[1..].iter().zip(&ids[1..]) {
            assert_eq!(*r, relationship(IMAGE_SPDX_ID, "CONTAINS", id));
        }
    }

    #[test]
    fn cyclonedx_document() {
        let doc = cyclonedx(&inventory(), &subject());
        assert_eq!(doc["bomFormat"], "CycloneDX");
        assert_eq!(doc["specVersion"], "1.6");
        assert_eq!(
            doc["serialNumber"],
            "urn:uuid:3f2504e0-4f89-41d3-9a0c-0305e82c3301"
        );
        assert_eq!(doc["version"], 1);
        let metadata = &doc["metadata"];
        assert_eq!(metadata["timestamp"], "2024-05-01T12:00:00Z");
        assert_eq!(metadata["tools"]["components"][0]["name"], "berth");
        assert_eq!(metadata["tools"]["components"][0]["version"], "0.1.0");
        assert_eq!(metadata["component"]["type"], "container");
        assert_eq!(metadata["component"]["version"], DIGEST);
        assert_eq!(
            metadata["component"]["hashes"],
            json!([{ "alg": "SHA-256", "content": &DIGEST[7..] }])
        );
        assert_eq!(
            metadata["properties"],
            json!([property("berth:coverage", "complete")])
        );

        let components = doc["components"].as_array().unwrap();
        assert_eq!(components.len(), 6);
        assert_eq!(components[0]["type"], "operating-system");
        assert_eq!(components[0]["name"], "debian");
        let refs: Vec<&str> = components
            .iter()
            .map(|c| c["bom-ref"].as_str().unwrap())
            .collect();
        assert_eq!(
            refs.iter().collect::<HashSet<_>>().len(),
            refs.len(),
            "{refs:?}"
        );
        assert!(!refs.contains(&"image"));

        let deb = &components[1];
        assert_eq!(deb["type"], "library");
        assert_eq!(
            deb["bom-ref"],
            "pkg:deb/debian/libacl1@2.3.1-3?arch=amd64&distro=bookworm&upstream=acl"
        );
        assert_eq!(deb["purl"], deb["bom-ref"]);
        assert_eq!(
            deb["licenses"],
            json!([{ "expression": "GPL-2.0-or-later AND LGPL-2.1-or-later" }])
        );
        assert_eq!(
            deb["properties"],
            json!([
                property("berth:package:ecosystem", "deb"),
                property("berth:package:path", "/var/lib/dpkg/status"),
                property("berth:package:layer", "0"),
                property("berth:package:arch", "amd64"),
                property("berth:package:source-name", "acl"),
                property("berth:package:source-version", "2.3.1-3"),
            ])
        );
        let jar = &components[2];
        assert_eq!(jar["group"], "com.google.guava");
        assert_eq!(jar["name"], "guava");
        assert_eq!(
            jar["licenses"],
            json!([{ "license": { "id": "Apache-2.0" } }])
        );
        // The same purl twice: the second reference adds the path.
        assert_eq!(
            components[3]["bom-ref"],
            "pkg:maven/com.google.guava/guava@29.0-jre|/app/other/guava.jar"
        );
        assert_eq!(
            components[4]["licenses"],
            json!([{ "license": { "name": "GPLv3+" } }])
        );
        assert_eq!(
            components[5]["licenses"],
            json!([{ "license": { "id": "Apache-2.0" } }, { "license": { "id": "MIT" } }])
        );
    }

    #[test]
    fn coverage_is_stated() {
        let mut inv = inventory();
        inv.coverage = Coverage::Incomplete {
            missing_layers: vec!["sha256:aa".into()],
        };
        let doc = spdx(&inv, &subject());
        assert!(
            doc["creationInfo"]["comment"]
                .as_str()
                .unwrap()
                .contains("sha256:aa")
        );
        let doc = cyclonedx(&inv, &subject());
        assert_eq!(
            doc["metadata"]["properties"],
            json!([
                property("berth:coverage", "incomplete"),
                property("berth:coverage:missing-layer", "sha256:aa"),
            ])
        );
    }

    #[test]
    fn without_os_or_packages() {
        let inv = Inventory {
            coverage: Coverage::NotScannable {
                reason: "a signature".into(),
            },
            os: None,
            packages: vec![],
            skipped: vec![],
            errors: vec![],
        };
        let mut s = subject();
        s.tags.clear();
        s.digest = "not-a-digest".into();
        let doc = spdx(&inv, &s);
        assert_eq!(doc["packages"].as_array().unwrap().len(), 1);
        assert!(doc["packages"][0].get("checksums").is_none());
        assert_eq!(doc["relationships"].as_array().unwrap().len(), 1);
        let doc = cyclonedx(&inv, &s);
        assert_eq!(doc["components"], json!([]));
        assert!(doc["metadata"]["component"].get("hashes").is_none());
        assert!(doc["metadata"]["component"].get("properties").is_none());
    }

    #[test]
    fn licenses() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["MIT"], Some("MIT")),
            (&["MIT", "MIT"], Some("MIT")),
            (&["Apache-2.0 OR MIT"], Some("Apache-2.0 OR MIT")),
            (
                &["GPL-2.0-only WITH Classpath-exception-2.0"],
                Some("GPL-2.0-only WITH Classpath-exception-2.0"),
            ),
            (
                &["(MIT OR Apache-2.0) AND BSD-3-Clause"],
                Some("(MIT OR Apache-2.0) AND BSD-3-Clause"),
            ),
            (&["Apache-2.0+"], Some("Apache-2.0+")),
            (&["MIT", "Apache-2.0"], None),
            (&["MIT and BSD-3-Clause"], None),
            (&["MIT/Apache-2.0"], None),
            (&["GPL-2.0"], None),
            (&["GPL-2.0+"], None),
            (&["GPLv2+"], None),
            (&["MIT License"], None),
            (&["mit"], None),
            (&["LicenseRef-Proprietary"], None),
            (&[""], None),
            (&[], None),
        ];
        for (input, want) in cases {
            let input: Vec<String> = input.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(spdx_license(&input).as_deref(), *want, "{input:?}");
        }
        assert_eq!(
            cyclonedx_licenses(&["GPL-2.0".into(), "BSD".into()]),
            vec![
                json!({ "license": { "name": "BSD" } }),
                json!({ "license": { "name": "GPL-2.0" } }),
            ]
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp("2024-05-01T12:00:00Z"), "2024-05-01T12:00:00Z");
        assert_eq!(
            timestamp("2024-05-01T12:00:00.999+00:00"),
            "2024-05-01T12:00:00Z"
        );
        assert_eq!(
            timestamp("2024-01-01T01:30:00+02:00"),
            "2023-12-31T23:30:00Z"
        );
        assert_eq!(timestamp("yesterday"), "yesterday");
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
        #[test]
        fn arbitrary_packages_give_valid_documents(
            packages in prop::collection::vec(
                (ecosystems(), any::<String>(), any::<String>(), any::<String>(),
                 prop::collection::vec(any::<String>(), 0..3)),
                0..8,
            ),
        ) {
            let packages: Vec<Package> = packages
                .into_iter()
                .map(|(ecosystem, name, version, path, licenses)| {
                    let mut p = Package::new(ecosystem, &name, &version, &path);
                    p.licenses = licenses;
                    p
                })
                .collect();
            let inv = Inventory {
                coverage: Coverage::Complete,
                os: None,
                packages,
                skipped: vec![],
                errors: vec![],
            };
            let doc = spdx(&inv, &subject());
            let mut ids = HashSet::new();
            for p in doc["packages"].as_array().unwrap() {
                let id = p["SPDXID"].as_str().unwrap();
                prop_assert!(valid_spdx_id(id), "{}", id);
                prop_assert!(ids.insert(id.to_owned()), "duplicate {}", id);
            }
            prop_assert!(serde_json::to_string(&doc).is_ok());
            let doc = cyclonedx(&inv, &subject());
            let mut refs = HashSet::new();
            for c in doc["components"].as_array().unwrap() {
                prop_assert!(refs.insert(c["bom-ref"].as_str().unwrap().to_owned()));
            }
            prop_assert!(serde_json::to_string(&doc).is_ok());
        }
    }
}
