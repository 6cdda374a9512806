//! Java archives: JAR, WAR, EAR, PAR and Jenkins plugins (JPI, HPI), read from the archive's
//! bytes wherever they sit in the image (`*.jar`, `*.war`, `*.ear`, `*.par`, `*.jpi`, `*.hpi`).
//!
//! The rules are trivy's (the fixtures' expectations come from its jar parser), offline:
//! - Every `pom.properties` in the archive with a groupId, an artifactId and a version is a
//!   package named `groupId:artifactId`. Maven writes one per artifact under
//!   `META-INF/maven/<groupId>/<artifactId>/`; shaded ("fat") jars keep those of what they
//!   bundle, and hand-made ones put it elsewhere, so any path counts.
//! - The archive's own identity is taken from the main section of `META-INF/MANIFEST.MF` only
//!   when no pom.properties gives it: the archive has none, or its file name reads
//!   `<artifactId>-<version>.jar` and none has that artifactId and version. The group is the
//!   first of Jenkins' `Group-Id`, `Implementation-Vendor-Id`, `Bundle-SymbolicName` without
//!   its last dotted part, `Implementation-Vendor`, `Specification-Vendor`; the artifact the
//!   first of `Implementation-Title`, `Specification-Title`, `Bundle-Name`; the version the
//!   first of `Implementation-Version`, `Specification-Version`, `Bundle-Version`. Values that
//!   are `%placeholders` (OSGi localisation) do not count. Trivy's and syft's online step (a
//!   Maven Central look-up by SHA-1) is not made: scanning must not depend on the network.
//! - Licences: the `<licenses>` names of the embedded `META-INF/maven/<g>/<a>/pom.xml`, for the
//!   package `g:a`; for the archive's own package, when exactly one package is the archive's
//!   own and it has none yet, Jenkins' `Plugin-License-Name` or OSGi `Bundle-License`.
//! - Archives inside (`WEB-INF/lib/*.jar`, `BOOT-INF/lib/*.jar`, `lib/*.jar`, any entry with
//!   one of the extensions above) are read the same way, recursively, within [`JavaLimits`].
//!   A package's path is the chain of archives it was found in, joined by `!`
//!   (`app.war!WEB-INF/lib/guava-29.0-jre.jar`).
//! - The same name and version found twice in the same archive is listed once.
//!
//! Only stored and deflated entries are read (what `jar`, Maven and Gradle write); an entry in
//! another method, or encrypted, is reported in [`ArchiveContents::errors`] and passed over.

use std::io::{Cursor, Read};

use quick_xml::events::Event;
use zip::ZipArchive;

use crate::{Ecosystem, Package, ParseError, Skipped};

/// File extensions of the Java archive formats, compared without regard to case.
const ARCHIVE_EXTENSIONS: [&str; 6] = ["jar", "war", "ear", "par", "jpi", "hpi"];

/// Entries passed over that are listed one by one; a crafted archive can hold many thousands
/// of them, and after these a count says how many more there were.
const MAX_SKIPPED_LISTED: usize = 32;

/// How much of an archive is read, so that a crafted one (a zip bomb, a jar nested a thousand
/// deep) cannot exhaust memory or time. A nested archive is held in memory while it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JavaLimits {
    /// How deep archives inside archives are opened: 0 reads only the archive itself, 1 also
    /// the jars in a war, 2 also the jars in a war in an ear.
    pub max_depth: usize,
    /// Uncompressed bytes read from entries, all levels together. An entry that would go past
    /// it is passed over (listed in [`ArchiveContents::skipped`]); once it is used up, nothing
    /// more is read.
    pub max_total_bytes: u64,
    /// Largest metadata entry (`MANIFEST.MF`, `pom.properties`, `pom.xml`) read; real ones are
    /// a few kilobytes.
    pub max_metadata_bytes: u64,
}

impl Default for JavaLimits {
    fn default() -> Self {
        JavaLimits {
            // An ear holding a war holding jars is 2; Spring Boot's BOOT-INF/lib is 1.
            max_depth: 4,
            max_total_bytes: 256 << 20,
            max_metadata_bytes: 1 << 20,
        }
    }
}

/// What one archive holds, with what was not read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveContents {
    pub packages: Vec<Package>,
    /// Entries passed over because of a [`JavaLimits`] limit, named `outer.jar!inner.jar`.
    pub skipped: Vec<Skipped>,
    /// Nested archives and metadata entries that could not be read; the rest was read.
    pub errors: Vec<ParseError>,
}

/// Whether `path` names a Java archive.
pub fn wants(path: &str) -> bool {
    is_archive_name(path)
}

/// The packages in the archive at `path` (and the archives inside it), within the default
/// [`JavaLimits`].
pub fn parse(path: &str, data: &[u8]) -> Result<Vec<Package>, ParseError> {
    parse_with_limits(path, data, &JavaLimits::default())
}

/// The packages in the archive at `path` (and the archives inside it), within `limits`. What
/// was passed over or could not be read is dropped: [`parse_contents`] reports it.
pub fn parse_with_limits(
    path: &str,
    data: &[u8],
    limits: &JavaLimits,
) -> Result<Vec<Package>, ParseError> {
    parse_contents(path, data, limits).map(|contents| contents.packages)
}

/// The packages in the archive at `path` (and the archives inside it), with the entries not
/// read and why. Fails only when `data` is not a zip archive at all.
pub fn parse_contents(
    path: &str,
    data: &[u8],
    limits: &JavaLimits,
) -> Result<ArchiveContents, ParseError> {
    let mut reader = ArchiveReader {
        limits,
        remaining: limits.max_total_bytes,
        skipped: Vec::new(),
        not_recorded: 0,
        errors: Vec::new(),
    };
    let packages = reader.read_archive(path, data, 0)?;
    let mut skipped = reader.skipped;
    if reader.not_recorded > 0 {
        skipped.push(Skipped {
            what: path.to_owned(),
            reason: format!(
                "{} more entries passed over for the same java limits",
                reader.not_recorded
            ),
        });
    }
    Ok(ArchiveContents {
        packages: without_duplicates(packages),
        skipped,
        errors: reader.errors,
    })
}

/// The entries of an archive that say what it holds.
enum Member {
    Manifest,
    PomProperties,
    /// `META-INF/maven/<group>/<artifact>/pom.xml`.
    PomXml {
        name: String,
    },
    Archive,
}

fn classify(entry: &str) -> Option<Member> {
    if entry.ends_with('/') {
        return None;
    }
    if entry.eq_ignore_ascii_case("META-INF/MANIFEST.MF") {
        return Some(Member::Manifest);
    }
    let base = entry.rsplit('/').next().unwrap_or(entry);
    if base == "pom.properties" {
        return Some(Member::PomProperties);
    }
    if let Some((group, artifact)) = embedded_pom_coordinates(entry) {
        return Some(Member::PomXml {
            name: format!("{group}:{artifact}"),
        });
    }
    if is_archive_name(entry) {
        return Some(Member::Archive);
    }
    None
}

/// `(group, artifact)` of a `META-INF/maven/<group>/<artifact>/pom.xml` path. The version is
/// not in the path, so licences are matched to packages by name.
fn embedded_pom_coordinates(entry: &str) -> Option<(&str, &str)> {
    let rest = entry.strip_prefix("META-INF/maven/")?;
    let rest = rest.strip_suffix("/pom.xml")?;
    let (group, artifact) = rest.split_once('/')?;
    if group.is_empty() || artifact.is_empty() || artifact.contains('/') {
        return None;
    }
    Some((group, artifact))
}

fn is_archive_name(path: &str) -> bool {
    let base = path.rsplit(['/', '!']).next().unwrap_or(path);
    match base.rsplit_once('.') {
        Some((stem, extension)) => {
            !stem.is_empty()
                && ARCHIVE_EXTENSIONS
                    .iter()
                    .any(|known| extension.eq_ignore_ascii_case(known))
        }
        None => false,
    }
}

/// Reads archives recursively, charging every uncompressed byte to one budget.
struct ArchiveReader<'a> {
    limits: &'a JavaLimits,
    /// Bytes of `max_total_bytes` not yet read; at 0 every level stops reading.
    remaining: u64,
    skipped: Vec<Skipped>,
    /// Entries passed over beyond [`MAX_SKIPPED_LISTED`].
    not_recorded: usize,
    errors: Vec<ParseError>,
}

impl ArchiveReader<'_> {
    fn read_archive(
        &mut self,
        path: &str,
        data: &[u8],
        depth: usize,
    ) -> Result<Vec<Package>, ParseError> {
        let mut zip = ZipArchive::new(Cursor::new(data))
            .map_err(|e| ParseError::new(path, format!("not a readable zip archive: {e}")))?;

        // Packages whose path is this archive (pom.properties, then the manifest's).
        let mut own = Vec::new();
        let mut inner = Vec::new();
        let mut manifest = None;
        let mut pom_licenses: Vec<(String, Vec<String>)> = Vec::new();

        for index in 0..zip.len() {
            let Some(Ok(entry)) = zip.name_for_index(index) else {
                continue;
            };
            let entry = entry.into_owned();
            let Some(member) = classify(&entry) else {
                continue;
            };
            if self.remaining == 0 {
                let reason = format!(
                    "the java max_total_bytes ({}) was used up: the rest of the archive was not \
                     read",
                    self.limits.max_total_bytes
                );
                self.skip(path, reason);
                break;
            }
            let entry_path = format!("{path}!{entry}");
            if let Member::Archive = member {
                if depth >= self.limits.max_depth {
                    let reason = format!(
                        "archive nested deeper than the java max_depth ({})",
                        self.limits.max_depth
                    );
                    self.skip(&entry_path, reason);
                    continue;
                }
                let Some(bytes) = self.read_entry(&mut zip, index, &entry_path, None) else {
                    continue;
                };
                match self.read_archive(&entry_path, &bytes, depth + 1) {
                    Ok(packages) => inner.extend(packages),
                    Err(error) => self.errors.push(error),
                }
                continue;
            }

            let cap = Some(self.limits.max_metadata_bytes);
            let Some(bytes) = self.read_entry(&mut zip, index, &entry_path, cap) else {
                continue;
            };
            match member {
                Member::Manifest => {
                    manifest = Some(Manifest::parse(&String::from_utf8_lossy(&bytes)))
                }
                Member::PomProperties => {
                    let text = String::from_utf8_lossy(&bytes);
                    if let Some(package) = pom_properties_package(&text, path) {
                        own.push(package);
                    }
                }
                Member::PomXml { name } => {
                    let names = pom_licenses_of(&bytes);
                    if !names.is_empty() {
                        pom_licenses.push((name, names));
                    }
                }
                Member::Archive => {}
            }
        }

        if let Some(manifest) = &manifest
            && !pom_properties_name_archive(path, &own)
            && let Some(package) = manifest.package(path)
        {
            own.push(package);
        }

        for package in own.iter_mut().chain(inner.iter_mut()) {
            if !package.licenses.is_empty() {
                continue;
            }
            if let Some((_, names)) = pom_licenses.iter().find(|(name, _)| *name == package.name) {
                package.licenses = names.clone();
            }
        }
        if let Some(manifest) = &manifest
            && let [package] = own.as_mut_slice()
            && package.licenses.is_empty()
        {
            package.licenses = manifest.licenses();
        }
        own.extend(inner);
        Ok(own)
    }

    /// The uncompressed bytes of entry `index`, at most `cap` of them and never more than the
    /// budget has left. `None`, with the reason recorded, when it is not read.
    fn read_entry(
        &mut self,
        zip: &mut ZipArchive<Cursor<&[u8]>>,
        index: usize,
        what: &str,
        cap: Option<u64>,
    ) -> Option<Vec<u8>> {
        let mut file = match zip.by_index(index) {
            Ok(file) => file,
            Err(e) => {
                self.errors
                    .push(ParseError::new(what, format!("cannot read entry: {e}")));
                return None;
            }
        };
        let allowed = cap.unwrap_or(u64::MAX).min(self.remaining);
        let reason = match cap {
            Some(cap) if cap <= self.remaining => {
                format!("larger than the java max_metadata_bytes ({cap})")
            }
            _ => format!(
                "larger than what was left of the java max_total_bytes ({})",
                self.limits.max_total_bytes
            ),
        };
        // An entry declared too large is passed over unread. The declared size can also lie
        // low: reading one byte past `allowed` is what tells for sure.
        if file.size() > allowed {
            self.skip(what, reason);
            return None;
        }
        let hint =
            usize::try_from(file.size().min(file.compressed_size().saturating_mul(4))).unwrap_or(0);
        let mut bytes = Vec::with_capacity(hint.min(1 << 20));
        let result = (&mut file)
            .take(allowed.saturating_add(1))
            .read_to_end(&mut bytes);
        let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        self.remaining = self.remaining.saturating_sub(read);
        if let Err(e) = result {
            self.errors.push(ParseError::new(
                what,
                format!("cannot decompress entry: {e}"),
            ));
            return None;
        }
        if read > allowed {
            self.skip(what, reason);
            return None;
        }
        Some(bytes)
    }

    fn skip(&mut self, what: &str, reason: String) {
        if self.skipped.len() < MAX_SKIPPED_LISTED {
            self.skipped.push(Skipped {
                what: what.to_owned(),
                reason,
            });
        } else {
            self.not_recorded += 1;
        }
    }
}

/// Whether one of the pom.properties found describes the archive itself, so that its manifest
/// adds nothing. Without a version in the file name, any pom.properties is taken to.
fn pom_properties_name_archive(path: &str, own: &[Package]) -> bool {
    if own.is_empty() {
        return false;
    }
    let Some((artifact, version)) = artifact_from_file_name(path) else {
        return true;
    };
    own.iter().any(|package| {
        package.version == version
            && package
                .name
                .rsplit_once(':')
                .is_some_and(|(_, id)| id == artifact)
    })
}

/// `(artifactId, version)` from a file name such as `spring-core-5.3.4-SNAPSHOT.jar`: the
/// version starts at the first `-` followed by a digit.
fn artifact_from_file_name(path: &str) -> Option<(&str, &str)> {
    let base = path.rsplit(['/', '!']).next()?;
    let (stem, _) = base.rsplit_once('.')?;
    let (at, _) = stem.match_indices('-').find(|(at, _)| {
        stem[at + 1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })?;
    let (artifact, version) = (&stem[..at], &stem[at + 1..]);
    (!artifact.is_empty()).then_some((artifact, version))
}

fn pom_properties_package(text: &str, path: &str) -> Option<Package> {
    let (mut group, mut artifact, mut version) = (None, None, None);
    for (key, value) in java_properties(text) {
        let slot = match key.as_str() {
            "groupId" => &mut group,
            "artifactId" => &mut artifact,
            "version" => &mut version,
            _ => continue,
        };
        *slot = Some(value.trim().to_owned());
    }
    let (group, artifact, version) = (group?, artifact?, version?);
    if group.is_empty() || artifact.is_empty() || version.is_empty() {
        return None;
    }
    Some(Package::new(
        Ecosystem::Maven,
        &format!("{group}:{artifact}"),
        &version,
        path,
    ))
}

/// The key-value pairs of a `.properties` file (java.util.Properties' format: `#`/`!`
/// comments, `=`, `:` or blank separators, backslash escapes and line continuations).
fn java_properties(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut lines = text.lines();
    while let Some(first) = lines.next() {
        let first = first.trim_start();
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        let mut logical = first.to_owned();
        while ends_with_escaping_backslash(&logical) {
            logical.pop();
            match lines.next() {
                Some(next) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split_property(&logical);
        pairs.push((unescape_property(key), unescape_property(value)));
    }
    pairs
}

fn ends_with_escaping_backslash(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// The raw key and value of a logical line: the key ends at the first unescaped `=`, `:` or
/// blank; then blanks, at most one `=` or `:`, and blanks separate it from the value.
fn split_property(line: &str) -> (&str, &str) {
    let mut escaped = false;
    let mut key_end = line.len();
    for (at, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '=' || c == ':' || c == ' ' || c == '\t' || c == '\x0c' {
            key_end = at;
            break;
        }
    }
    let key = &line[..key_end];
    let rest = line[key_end..].trim_start_matches([' ', '\t', '\x0c']);
    let rest = rest
        .strip_prefix(['=', ':'])
        .map(|r| r.trim_start_matches([' ', '\t', '\x0c']))
        .unwrap_or(rest);
    (key, rest)
}

fn unescape_property(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.clone().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(decoded) if hex.len() == 4 => {
                        out.push(decoded);
                        chars.nth(3);
                    }
                    _ => out.push('u'),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// The `<project><licenses><license><name>` values of a pom.xml. A document that stops being
/// well-formed yields the names read up to there.
fn pom_licenses_of(xml: &[u8]) -> Vec<String> {
    const NAME_PATH: [&[u8]; 4] = [b"project", b"licenses", b"license", b"name"];
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut names = Vec::new();
    let mut current: Option<String> = None;
    let in_name = |stack: &[Vec<u8>]| {
        stack.len() == NAME_PATH.len() && stack.iter().zip(NAME_PATH).all(|(a, b)| a == b)
    };
    loop {
        match reader.read_event() {
            Ok(Event::Start(start)) => {
                stack.push(start.local_name().as_ref().to_vec());
                if in_name(&stack) {
                    current = Some(String::new());
                }
            }
            Ok(Event::End(_)) => {
                if in_name(&stack)
                    && let Some(text) = current.take()
                {
                    let text = text.trim();
                    if !text.is_empty() {
                        names.push(text.to_owned());
                    }
                }
                stack.pop();
            }
            Ok(Event::Text(text)) => {
                if let Some(current) = current.as_mut() {
                    current.push_str(&String::from_utf8_lossy(text.as_ref()));
                }
            }
            Ok(Event::CData(text)) => {
                if let Some(current) = current.as_mut() {
                    current.push_str(&String::from_utf8_lossy(text.as_ref()));
                }
            }
            Ok(Event::GeneralRef(reference)) => {
                if let Some(current) = current.as_mut() {
                    if let Ok(Some(c)) = reference.resolve_char_ref() {
                        current.push(c);
                    } else {
                        let name = String::from_utf8_lossy(reference.as_ref());
                        if let Some(resolved) = quick_xml::escape::resolve_predefined_entity(&name)
                        {
                            current.push_str(resolved);
                        }
                    }
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    names
}

/// The main section of a `META-INF/MANIFEST.MF`: the attributes of the archive itself (the
/// sections after the first blank line describe single entries).
struct Manifest {
    attributes: Vec<(String, String)>,
}

impl Manifest {
    fn parse(text: &str) -> Manifest {
        let mut attributes: Vec<(String, String)> = Vec::new();
        for line in manifest_lines(text) {
            if line.is_empty() {
                break;
            }
            // Long values are folded at 72 bytes onto lines starting with one space; unfolding
            // joins them with nothing in between, as java.util.jar.Manifest does.
            if let Some(continued) = line.strip_prefix(' ') {
                if let Some((_, value)) = attributes.last_mut() {
                    value.push_str(continued);
                }
                continue;
            }
            if let Some((name, value)) = line.split_once(':') {
                attributes.push((name.trim().to_owned(), value.to_owned()));
            }
        }
        Manifest { attributes }
    }

    /// The value of an attribute (names are case-insensitive; the last one counts, as in
    /// java.util.jar), unless empty or a `%key` OSGi localisation placeholder.
    fn get(&self, name: &str) -> Option<&str> {
        let (_, value) = self
            .attributes
            .iter()
            .rev()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))?;
        let value = value.trim();
        (!value.is_empty() && !value.starts_with('%')).then_some(value)
    }

    fn package(&self, path: &str) -> Option<Package> {
        let group = self
            .get("Group-Id")
            .or_else(|| self.get("Implementation-Vendor-Id"))
            .or_else(|| self.get("Bundle-SymbolicName").map(symbolic_name_group))
            .or_else(|| self.get("Implementation-Vendor"))
            .or_else(|| self.get("Specification-Vendor"))?;
        let artifact = self
            .get("Implementation-Title")
            .or_else(|| self.get("Specification-Title"))
            .or_else(|| self.get("Bundle-Name"))?;
        let version = self
            .get("Implementation-Version")
            .or_else(|| self.get("Specification-Version"))
            .or_else(|| self.get("Bundle-Version"))?;
        Some(Package::new(
            Ecosystem::Maven,
            &format!("{group}:{artifact}"),
            version,
            path,
        ))
    }

    /// Jenkins' `Plugin-License-Name[-N]` values, or else the licence identifiers of OSGi's
    /// `Bundle-License` (a comma-separated list of `id;attribute=value` entries).
    fn licenses(&self) -> Vec<String> {
        let plugin: Vec<String> = self
            .attributes
            .iter()
            .filter(|(key, _)| {
                key == "Plugin-License-Name"
                    || key
                        .strip_prefix("Plugin-License-Name-")
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|(_, value)| value.trim().to_owned())
            .filter(|value| !value.is_empty())
            .collect();
        if !plugin.is_empty() {
            return plugin;
        }
        let Some(header) = self.get("Bundle-License") else {
            return Vec::new();
        };
        split_unquoted(header, ',')
            .into_iter()
            .filter_map(|entry| {
                let id = split_unquoted(entry, ';').into_iter().next()?;
                let id = id.trim().trim_matches('"').trim();
                (!id.is_empty() && id != "<<EXTERNAL>>").then(|| id.to_owned())
            })
            .collect()
    }
}

/// `org.springframework.core` → `org.springframework`: OSGi symbolic names are usually the
/// group followed by the artifact's own last part.
fn symbolic_name_group(symbolic_name: &str) -> &str {
    let name = symbolic_name
        .split(';')
        .next()
        .unwrap_or(symbolic_name)
        .trim();
    match name.rsplit_once('.') {
        Some((group, _)) if !group.is_empty() => group,
        _ => name,
    }
}

/// Splits a manifest header on `separator`, except inside double-quoted values.
fn split_unquoted(header: &str, separator: char) -> Vec<&str> {
    let mut fields = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (at, c) in header.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            fields.push(&header[start..at]);
            start = at + c.len_utf8();
        }
    }
    fields.push(&header[start..]);
    fields
}

/// Lines ended by CRLF, LF or a lone CR, all three of which the manifest grammar allows.
fn manifest_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.find(['\r', '\n']) {
            None => Some(std::mem::take(&mut rest)),
            Some(at) => {
                let line = &rest[..at];
                let ending = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[at + ending..];
                Some(line)
            }
        }
    })
}

/// Drops a package found again with the same name and version at the same path (a shaded jar
/// that bundles two copies of one pom.properties, say).
fn without_duplicates(packages: Vec<Package>) -> Vec<Package> {
    let mut seen = std::collections::HashSet::new();
    packages
        .into_iter()
        .filter(|p| seen.insert((p.name.clone(), p.version.clone(), p.path.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;
    use zip::write::SimpleFileOptions;

    use super::*;

    /// A zip archive of `(name, bytes)` entries, deflated.
    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in entries {
            writer.start_file(*name, options).expect("in-memory zip");
            writer.write_all(bytes).expect("in-memory zip");
        }
        writer.finish().expect("in-memory zip").into_inner()
    }

    fn pom_properties(group: &str, artifact: &str, version: &str) -> Vec<u8> {
        format!(
            "#Generated by Maven\n#Tue Mar 05 10:12:44 UTC 2024\n\
             groupId={group}\nartifactId={artifact}\nversion={version}\n"
        )
        .into_bytes()
    }

    fn names(packages: &[Package]) -> Vec<(String, String, String)> {
        let mut names: Vec<_> = packages
            .iter()
            .map(|p| (p.name.clone(), p.version.clone(), p.path.clone()))
            .collect();
        names.sort();
        names
    }

    fn triple(name: &str, version: &str, path: &str) -> (String, String, String) {
        (name.to_owned(), version.to_owned(), path.to_owned())
    }

    /// A war as Maven's war plugin builds it: its own pom.properties and manifest, and
    /// dependency jars in WEB-INF/lib (one of them Gradle-built, with a manifest only).
    fn sample_war() -> Vec<u8> {
        let jackson = archive(&[
            (
                "META-INF/MANIFEST.MF",
                b"Manifest-Version: 1.0\r\nBundle-SymbolicName: com.fasterxml.jackson.core.jackson-databind\r\nBundle-Version: 2.9.10.6\r\n\r\n",
            ),
            (
                "META-INF/maven/com.fasterxml.jackson.core/jackson-databind/pom.properties",
                &pom_properties("com.fasterxml.jackson.core", "jackson-databind", "2.9.10.6"),
            ),
            (
                "META-INF/maven/com.fasterxml.jackson.core/jackson-databind/pom.xml",
                b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<project xmlns=\"http://maven.apache.org/POM/4.0.0\">\n  <licenses>\n    <license>\n      <name>The Apache Software License, Version 2.0</name>\n      <url>http://www.apache.org/licenses/LICENSE-2.0.txt</url>\n    </license>\n  </licenses>\n</project>\n",
            ),
        ]);
        let gradle_built = archive(&[(
            "META-INF/MANIFEST.MF",
            b"Manifest-Version: 1.0\nImplementation-Title: commons-compress\nImplementation-Version: 1.19\nImplementation-Vendor-Id: org.apache.commons\nBundle-License: \"Apache-2.0\";link=\"https://www.apache.org/licenses/LICENSE-2.0.txt\"\n",
        )]);
        archive(&[
            (
                "META-INF/MANIFEST.MF",
                b"Manifest-Version: 1.0\r\nCreated-By: Maven WAR Plugin 3.4.0\r\n\r\n",
            ),
            (
                "META-INF/maven/com.example/web-app/pom.properties",
                &pom_properties("com.example", "web-app", "1.0-SNAPSHOT"),
            ),
            ("WEB-INF/", b""),
            ("WEB-INF/web.xml", b"<web-app/>"),
            ("WEB-INF/lib/jackson-databind-2.9.10.6.jar", &jackson),
            ("WEB-INF/lib/commons-compress-1.19.jar", &gradle_built),
        ])
    }

    #[test]
    fn war_with_libraries() {
        let packages = parse("srv/app.war", &sample_war()).expect("valid war");
        assert_eq!(
            names(&packages),
            vec![
                triple("com.example:web-app", "1.0-SNAPSHOT", "srv/app.war"),
                triple(
                    "com.fasterxml.jackson.core:jackson-databind",
                    "2.9.10.6",
                    "srv/app.war!WEB-INF/lib/jackson-databind-2.9.10.6.jar"
                ),
                triple(
                    "org.apache.commons:commons-compress",
                    "1.19",
                    "srv/app.war!WEB-INF/lib/commons-compress-1.19.jar"
                ),
            ]
        );
        let license = |name: &str| {
            packages
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.licenses.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            license("com.fasterxml.jackson.core:jackson-databind"),
            ["The Apache Software License, Version 2.0"]
        );
        assert_eq!(
            license("org.apache.commons:commons-compress"),
            ["Apache-2.0"]
        );
        assert!(license("com.example:web-app").is_empty());
        assert!(
            packages
                .iter()
                .all(|p| p.ecosystem == Ecosystem::Maven && p.layer.is_none())
        );
    }

    #[test]
    fn manifest_used_when_file_name_names_another_artifact() {
        // A shadow jar built by Gradle: bundled dependencies' pom.properties, none of its own.
        let jar = archive(&[
            (
                "META-INF/MANIFEST.MF",
                b"Manifest-Version: 1.0\nImplementation-Title: billing-service\nImplementation-Version: 2.3.1\nImplementation-Vendor-Id: com.example\n",
            ),
            (
                "META-INF/maven/org.slf4j/slf4j-api/pom.properties",
                &pom_properties("org.slf4j", "slf4j-api", "1.7.30"),
            ),
        ]);
        let packages = parse("app/billing-service-2.3.1-all.jar", &jar).expect("valid jar");
        assert_eq!(
            names(&packages),
            vec![
                triple(
                    "com.example:billing-service",
                    "2.3.1",
                    "app/billing-service-2.3.1-all.jar"
                ),
                triple(
                    "org.slf4j:slf4j-api",
                    "1.7.30",
                    "app/billing-service-2.3.1-all.jar"
                ),
            ]
        );
        // Without a version in the file name, the bundled pom.properties is taken as its own.
        let packages = parse("app/app.jar", &jar).expect("valid jar");
        assert_eq!(
            names(&packages),
            vec![triple("org.slf4j:slf4j-api", "1.7.30", "app/app.jar")]
        );
    }

    #[test]
    fn jenkins_plugin_manifest() {
        let hpi = archive(&[(
            "META-INF/MANIFEST.MF",
            b"Manifest-Version: 1.0\nCreated-By: Maven Archiver 3.6.0\nGroup-Id: org.jenkins-ci.plugins\nShort-Name: git\nLong-Name: Jenkins Git plugin\nImplementation-Title: git\nImplementation-Version: 5.2.1\nPlugin-Version: 5.2.1\nPlugin-License-Name: MIT License\nPlugin-License-Url: https://opensource.org/licenses/MIT\nSpecification-Vendor: Jenkins project\n",
        )]);
        let packages = parse("var/jenkins_home/plugins/git.jpi", &hpi).expect("valid plugin");
        assert_eq!(packages.len(), 1);
        assert_eq!(packages[0].name, "org.jenkins-ci.plugins:git");
        assert_eq!(packages[0].version, "5.2.1");
        assert_eq!(packages[0].licenses, ["MIT License"]);
    }

    #[test]
    fn manifest_rules() {
        let m = Manifest::parse(
            "Manifest-Version: 1.0\rBundle-Name: %bundle.name\rBundle-SymbolicName: org.ex\r ample.core;singleton:=true\rBundle-Version: 3.1.0\rSpecification-Title: core\r\rName: org/example/\rImplementation-Title: not-main\r",
        );
        let package = m.package("x.jar").expect("complete manifest");
        assert_eq!(package.name, "org.example:core");
        assert_eq!(package.version, "3.1.0");
        assert_eq!(m.get("Bundle-Name"), None);
        assert_eq!(m.get("implementation-title"), None);
        assert!(
            Manifest::parse("Manifest-Version: 1.0\n")
                .package("x.jar")
                .is_none()
        );
    }

    #[test]
    fn properties_format() {
        let pairs = java_properties(
            "# comment\n! also\n  groupId = org.example\nartifactId:multi\\\n    part\nversion 1.0\\u002dbeta\nempty\nkey\\=with\\:colon=v\n",
        );
        assert_eq!(
            pairs,
            vec![
                ("groupId".to_owned(), "org.example".to_owned()),
                ("artifactId".to_owned(), "multipart".to_owned()),
                ("version".to_owned(), "1.0-beta".to_owned()),
                ("empty".to_owned(), String::new()),
                ("key=with:colon".to_owned(), "v".to_owned()),
            ]
        );
        assert!(pom_properties_package("groupId=a\nartifactId=b\n", "x.jar").is_none());
        assert_eq!(unescape_property("\\u12"), "u12");
    }

    #[test]
    fn pom_licenses_only_from_project_level() {
        let xml = br#"<?xml version="1.0" encoding="ISO-8859-1"?>
<!-- <licenses><license><name>comment</name></license></licenses> -->
<project>
  <name>Not a licence</name>
  <licenses>
    <license><name>GNU Lesser General Public License &amp; more</name></license>
    <license><name><![CDATA[Eclipse Public License - v 2.0]]></name></license>
    <license><url>https://example.org/no-name</url></license>
  </licenses>
  <profiles><profile><licenses><license><name>Profile</name></license></licenses></profile></profiles>
</project>"#;
        assert_eq!(
            pom_licenses_of(xml),
            [
                "GNU Lesser General Public License & more",
                "Eclipse Public License - v 2.0"
            ]
        );
        assert!(pom_licenses_of(b"<project><licenses><license><name>x</nam").is_empty());
    }

    #[test]
    fn file_names() {
        assert_eq!(
            artifact_from_file_name("a/spring-core-5.3.4-SNAPSHOT.jar"),
            Some(("spring-core", "5.3.4-SNAPSHOT"))
        );
        assert_eq!(
            artifact_from_file_name("x.war!WEB-INF/lib/commons-lang3-3.12.0.jar"),
            Some(("commons-lang3", "3.12.0"))
        );
        assert_eq!(artifact_from_file_name("app.jar"), None);
        assert_eq!(artifact_from_file_name("-1.0.jar"), None);
    }

    #[test]
    fn wanted_paths() {
        for path in [
            "opt/app.jar",
            "srv/x.WAR",
            "a.ear",
            "plugins/git.jpi",
            "p/x.hpi",
            "y.par",
        ] {
            assert!(wants(path), "{path}");
        }
        for path in [
            "opt/app.jar.sha1",
            "usr/lib/jvm/release",
            ".jar",
            "a/jar",
            "x.zip",
        ] {
            assert!(!wants(path), "{path}");
        }
    }

    #[test]
    fn not_a_zip() {
        let error = parse("opt/broken.jar", b"PK\x03\x04 truncated").expect_err("not a zip");
        assert_eq!(error.path, "opt/broken.jar");
    }

    #[test]
    fn unreadable_nested_archive_is_an_error_beside_the_packages() {
        let outer = archive(&[
            (
                "META-INF/maven/a/b/pom.properties",
                &pom_properties("a", "b", "1"),
            ),
            ("lib/broken.jar", b"not a zip"),
        ]);
        let contents =
            parse_contents("x.jar", &outer, &JavaLimits::default()).expect("outer is valid");
        assert_eq!(names(&contents.packages), vec![triple("a:b", "1", "x.jar")]);
        assert_eq!(contents.errors.len(), 1);
        assert_eq!(contents.errors[0].path, "x.jar!lib/broken.jar");
    }

    #[test]
    fn depth_limit() {
        let mut jar = archive(&[(
            "META-INF/maven/g/level3/pom.properties",
            &pom_properties("g", "level3", "3"),
        )]);
        for level in (0..3).rev() {
            let properties = pom_properties("g", &format!("level{level}"), &level.to_string());
            jar = archive(&[
                (
                    &format!("META-INF/maven/g/level{level}/pom.properties"),
                    &properties,
                ),
                ("lib/inner.jar", &jar),
            ]);
        }
        let limits = JavaLimits {
            max_depth: 1,
            ..JavaLimits::default()
        };
        let contents = parse_contents("outer.jar", &jar, &limits).expect("valid jar");
        assert_eq!(
            names(&contents.packages),
            vec![
                triple("g:level0", "0", "outer.jar"),
                triple("g:level1", "1", "outer.jar!lib/inner.jar"),
            ]
        );
        assert_eq!(contents.skipped.len(), 1);
        assert_eq!(
            contents.skipped[0].what,
            "outer.jar!lib/inner.jar!lib/inner.jar"
        );
        let all = parse("outer.jar", &jar).expect("valid jar");
        assert_eq!(all.len(), 4);
        assert!(
            all.iter()
                .any(|p| p.path == "outer.jar!lib/inner.jar!lib/inner.jar!lib/inner.jar")
        );
    }

    #[test]
    fn zip_bomb_is_passed_over() {
        // 16 MiB of zeros deflate to about 16 KiB.
        let zeros = vec![0u8; 16 << 20];
        let outer = archive(&[
            (
                "META-INF/maven/g/first/pom.properties",
                &pom_properties("g", "first", "1"),
            ),
            ("lib/huge.jar", &zeros),
            (
                "META-INF/maven/g/after/pom.properties",
                &pom_properties("g", "after", "1"),
            ),
        ]);
        assert!(outer.len() < 1 << 20);
        let limits = JavaLimits {
            max_total_bytes: 1 << 20,
            ..JavaLimits::default()
        };
        let contents = parse_contents("bomb.jar", &outer, &limits).expect("valid jar");
        assert_eq!(
            names(&contents.packages),
            vec![
                triple("g:after", "1", "bomb.jar"),
                triple("g:first", "1", "bomb.jar")
            ]
        );
        assert_eq!(contents.skipped.len(), 1);
        assert_eq!(contents.skipped[0].what, "bomb.jar!lib/huge.jar");
        assert!(contents.skipped[0].reason.contains("max_total_bytes"));
        assert!(contents.errors.is_empty());
    }

    /// Sets the uncompressed size the local and central headers of entry `name` declare.
    fn declare_size(zip: &mut [u8], name: &[u8], size: u32) {
        let size = size.to_le_bytes();
        for at in 0..zip.len().saturating_sub(46) {
            let (field, name_length_at) = match &zip[at..at + 4] {
                b"PK\x03\x04" => (at + 22, at + 26),
                b"PK\x01\x02" => (at + 24, at + 28),
                _ => continue,
            };
            let name_length = usize::from(u16::from_le_bytes([
                zip[name_length_at],
                zip[name_length_at + 1],
            ]));
            let name_at = if zip[at + 2] == 3 { at + 30 } else { at + 46 };
            if zip.get(name_at..name_at + name_length) == Some(name) {
                zip[field..field + 4].copy_from_slice(&size);
            }
        }
    }

    #[test]
    fn entry_lying_about_its_size_is_not_read_past_the_budget() {
        let zeros = vec![0u8; 16 << 20];
        let mut outer = archive(&[
            (
                "META-INF/maven/g/first/pom.properties",
                &pom_properties("g", "first", "1"),
            ),
            ("lib/huge.jar", &zeros),
        ]);
        declare_size(&mut outer, b"lib/huge.jar", 100);
        let limits = JavaLimits {
            max_total_bytes: 1 << 20,
            ..JavaLimits::default()
        };
        let contents = parse_contents("lie.jar", &outer, &limits).expect("valid jar");
        assert_eq!(
            names(&contents.packages),
            vec![triple("g:first", "1", "lie.jar")]
        );
        // Either the zip reader stops at the declared size and finds the data wrong, or the
        // budget stops it: never 16 MiB in memory.
        let about_huge = |what: &str| what == "lie.jar!lib/huge.jar";
        assert!(
            contents.skipped.iter().any(|s| about_huge(&s.what))
                || contents.errors.iter().any(|e| about_huge(&e.path)),
            "{contents:?}"
        );
    }

    #[test]
    fn nothing_is_read_once_the_budget_is_used_up() {
        let first = pom_properties("g", "first", "1");
        let jar = archive(&[
            ("META-INF/maven/g/first/pom.properties", &first),
            (
                "META-INF/maven/g/after/pom.properties",
                &pom_properties("g", "after", "1"),
            ),
        ]);
        let limits = JavaLimits {
            max_total_bytes: first.len() as u64,
            ..JavaLimits::default()
        };
        let contents = parse_contents("x.jar", &jar, &limits).expect("valid jar");
        assert_eq!(
            names(&contents.packages),
            vec![triple("g:first", "1", "x.jar")]
        );
        assert_eq!(contents.skipped.len(), 1);
        assert_eq!(contents.skipped[0].what, "x.jar");
        assert!(contents.skipped[0].reason.contains("used up"));
    }

    #[test]
    fn skipped_entries_are_listed_up_to_a_bound() {
        let inner = archive(&[("a.class", b"")]);
        let entries: Vec<(String, Vec<u8>)> = (0..MAX_SKIPPED_LISTED + 5)
            .map(|i| (format!("lib/l{i}.jar"), inner.clone()))
            .collect();
        let entries: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
            .collect();
        let limits = JavaLimits {
            max_depth: 0,
            ..JavaLimits::default()
        };
        let contents = parse_contents("x.jar", &archive(&entries), &limits).expect("valid jar");
        assert_eq!(contents.skipped.len(), MAX_SKIPPED_LISTED + 1);
        let last = contents.skipped.last().expect("a summary");
        assert_eq!(last.what, "x.jar");
        assert!(last.reason.starts_with("5 more entries"));
    }

    #[test]
    fn oversized_metadata_is_skipped() {
        let mut manifest = b"Manifest-Version: 1.0\nImplementation-Title: x\n".to_vec();
        manifest.extend(std::iter::repeat_n(b'#', 2 << 20));
        let jar = archive(&[("META-INF/MANIFEST.MF", &manifest)]);
        let contents = parse_contents("m.jar", &jar, &JavaLimits::default()).expect("zip");
        assert!(contents.packages.is_empty());
        assert_eq!(contents.skipped.len(), 1);
        assert!(contents.skipped[0].reason.contains("max_metadata_bytes"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse("x.jar", &data);
        }

        #[test]
        fn corrupted_archive_never_panics(
            changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut data = sample_war();
            for (at, byte) in changes {
                let at = at.index(data.len());
                data[at] = byte;
            }
            if truncate {
                data.truncate(cut.index(data.len()));
            }
            let _ = parse_contents("x.war", &data, &JavaLimits::default());
        }
    }
}
