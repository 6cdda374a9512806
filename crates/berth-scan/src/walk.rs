//! The layer walker: reads an image's layers in order, each as one stream (gzip, zstd or
//! plain tar), and builds the inventory without extracting anything to disk.
//!
//! - Only the files a cataloguer asks for are read (by path, or for executables by their
//!   first bytes), one at a time, each up to [`Limits::max_file_bytes`]; a file is parsed as
//!   soon as it is read and only the packages it records are kept.
//! - Whiteouts apply across layers as the image spec says: `.wh.<name>` hides `<name>` and
//!   `.wh..wh..opq` hides a directory's contents, both only in the layers below their own. A
//!   file replaced in a later layer keeps only the later file's packages.
//! - Symbolic links are recorded and resolved at the end, for the paths where a package
//!   database or os-release lives (`etc/os-release → ../usr/lib/os-release`, `var/lib/rpm →
//!   ../../usr/lib/sysimage/rpm`, a merged `/usr`): when such a path leads to a file no
//!   cataloguer asked for by its own path, the layers are read a second time for just those
//!   files.
//! - Limits: the bytes of a file read ([`Limits::max_file_bytes`]), a layer's stored size
//!   ([`Limits::max_layer_bytes`]; a larger layer is skipped for content and reported), the
//!   paths remembered across layers ([`Limits::max_paths`]) and the time of the whole walk
//!   ([`Limits::max_duration`]), and the headers of one tar entry ([`HEADERS_MAX`]: the tar
//!   reader holds GNU long names and PAX extensions in memory whole). Memory is bounded by one
//!   file, a nested archive's bounds ([`crate::catalog::java::JavaLimits`]), one entry's
//!   headers, the decompressors' buffers (zstd's window at most 128 MiB, libzstd's default
//!   limit) and the remembered paths; nothing is written to disk.
//! - A layer whose bytes are not what its media type says, not a readable gzip or zstd
//!   stream, or not a tar, is listed as skipped and the next layer is read; a read the blob
//!   store fails stops the walk (a storage failure, not the image's).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::catalog::{apk, binary, dotnet, dpkg, java, node, os_release, php, python, rpm, ruby};
use crate::{Coverage, Inventory, OsRelease, Package, ParseError, Skipped};

/// The bounds of one walk (one image). `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A file read for its packages is held in memory whole up to this many bytes; a larger
    /// one is skipped and reported (`scan.max_file_size`).
    pub max_file_bytes: u64,
    /// A layer whose stored size is larger is not read at all, and reported
    /// (`scan.max_layer_size`).
    pub max_layer_bytes: u64,
    /// Paths remembered across layers (symbolic links and files that recorded packages); past
    /// it the walk fails (`scan.max_paths`).
    pub max_paths: usize,
    /// The whole walk, both passes (`scan.timeout`).
    pub max_duration: Duration,
    /// Nested archives (jars in wars).
    pub java: java::JavaLimits,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_file_bytes: 256 << 20,
            max_layer_bytes: 64 << 30,
            max_paths: 1_000_000,
            max_duration: Duration::from_secs(600),
            java: java::JavaLimits::default(),
        }
    }
}

/// A layer as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// The inventory of an image of one uncompressed tar layer held in memory (tests, benchmarks,
/// a file system packed on the fly).
pub fn inventory_of_tar(tar: Vec<u8>, limits: &Limits) -> Result<Inventory, WalkError> {
    struct One(Vec<u8>);
    impl Layers for One {
        fn open(&mut self, _: &LayerRef) -> io::Result<Option<Box<dyn Read + Send>>> {
            // The walker may open a layer twice (links to follow).
            Ok(Some(Box::new(io::Cursor::new(self.0.clone()))))
        }
    }
    let layer = LayerRef {
        digest: format!("sha256:{}", "0".repeat(64)),
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        size: tar.len() as u64,
    };
    inventory(&[layer], &mut One(tar), limits)
}

/// Where the walker gets layer bytes from: the registry's blob store, or memory in tests.
pub trait Layers {
    /// The layer's bytes as stored (compressed as its media type says); `None` when the
    /// registry does not hold it (a sparse image).
    fn open(&mut self, layer: &LayerRef) -> io::Result<Option<Box<dyn Read + Send>>>;
}

/// Why a walk stopped without an inventory.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("the scan took longer than {0:?} (scan.timeout)")]
    TimedOut(Duration),
    #[error("the image has more than {0} paths to remember (scan.max_paths)")]
    TooManyPaths(usize),
    #[error("layer {digest}: {source}")]
    Read { digest: String, source: io::Error },
}

/// The inventory of the image whose layers (bottom first) are `layers`.
pub fn inventory(
    layers: &[LayerRef],
    store: &mut dyn Layers,
    limits: &Limits,
) -> Result<Inventory, WalkError> {
    let deadline = Instant::now() + limits.max_duration;
    let mut walk = Walk::new(limits, deadline);
    let mut missing = Vec::new();
    walk.pass(layers, store, &mut missing, &|path| wanted(path).is_some())?;

    // Paths a database or os-release is read from, through the links the layers left.
    let mut second: BTreeSet<String> = BTreeSet::new();
    for fixed in FIXED {
        if walk.files.contains_key(*fixed) {
            continue;
        }
        if let Some(real) = walk.resolve(fixed) {
            if real != *fixed && !walk.files.contains_key(&real) && !walk.links.contains_key(&real)
            {
                walk.aliases.push(((*fixed).to_owned(), real.clone()));
                second.insert(real);
            } else if real != *fixed {
                walk.aliases.push(((*fixed).to_owned(), real));
            }
        }
    }
    if let Some(dir) = walk.resolve(STATUS_D_DIR).filter(|d| d != STATUS_D_DIR) {
        walk.status_d_alias = Some(dir);
    }
    let status_d_alias = walk.status_d_alias.clone();
    if !second.is_empty() || status_d_alias.is_some() {
        // A walk of its own, so that replacing and hiding apply to these files only; what it
        // finds is added to the first walk's files (other paths than those).
        let mut more = Walk::new(limits, deadline);
        more.binaries = false;
        more.aliases = walk.aliases.clone();
        more.status_d_alias = status_d_alias.clone();
        let mut ignored = Vec::new();
        more.pass(layers, store, &mut ignored, &|path| {
            second.contains(path)
                || status_d_alias.as_deref().is_some_and(|dir| {
                    path.strip_prefix(dir)
                        .and_then(|f| f.strip_prefix('/'))
                        .is_some_and(|f| !f.is_empty() && !f.contains('/') && !f.contains('.'))
                })
        })?;
        walk.files.append(&mut more.files);
        walk.skipped.append(&mut more.skipped);
    }
    Ok(walk.finish(missing))
}

/// The paths whose content is looked for through links too.
const FIXED: &[&str] = &[
    "etc/os-release",
    "usr/lib/os-release",
    "etc/alpine-release",
    "etc/debian_version",
    "var/lib/dpkg/status",
    "lib/apk/db/installed",
    "var/lib/rpm/Packages",
    "var/lib/rpm/Packages.db",
    "var/lib/rpm/rpmdb.sqlite",
];
const STATUS_D_DIR: &str = "var/lib/dpkg/status.d";

/// What a file at a path is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    OsRelease,
    Dpkg,
    Apk,
    Rpm,
    Python,
    Node,
    CargoLock,
    Java,
    Gem,
    Composer,
    DotNet,
}

fn wanted(path: &str) -> Option<Kind> {
    [
        (os_release::wants as fn(&str) -> bool, Kind::OsRelease),
        (dpkg::wants, Kind::Dpkg),
        (apk::wants, Kind::Apk),
        (rpm::wants, Kind::Rpm),
        (python::wants, Kind::Python),
        (node::wants, Kind::Node),
        (crate::catalog::rust::wants, Kind::CargoLock),
        (java::wants, Kind::Java),
        (ruby::wants, Kind::Gem),
        (php::wants, Kind::Composer),
        (dotnet::wants, Kind::DotNet),
    ]
    .into_iter()
    .find(|(wants, _)| wants(path))
    .map(|(_, kind)| kind)
}

/// Reads `data` as the file at `path` (read as `as_path` says: a link's target is read as
/// what the link's path names).
fn catalogue(as_path: &str, path: &str, data: &[u8], limits: &Limits) -> Found {
    let parsed = match wanted(as_path) {
        Some(Kind::OsRelease) => return Found::Os(os_release::parse(as_path, data)),
        Some(Kind::Dpkg) => dpkg::parse(path, data),
        Some(Kind::Apk) => apk::parse(path, data),
        Some(Kind::Rpm) => rpm::parse(path, data),
        Some(Kind::Python) => python::parse(path, data),
        Some(Kind::Node) => node::parse(path, data),
        Some(Kind::CargoLock) => crate::catalog::rust::parse(path, data),
        Some(Kind::Java) => {
            return match java::parse_contents(path, data, &limits.java) {
                Ok(contents) => Found::Archive(contents),
                Err(e) => Found::Error(e),
            };
        }
        Some(Kind::Gem) => ruby::parse(path, data),
        Some(Kind::Composer) => php::parse(path, data),
        Some(Kind::DotNet) => dotnet::parse(path, data),
        None => binary::parse_binary(path, data),
    };
    match parsed {
        Ok(packages) => Found::Packages(packages),
        Err(e) => Found::Error(e),
    }
}

/// What one file gave.
#[derive(Debug, Clone)]
enum Found {
    Os(Option<OsRelease>),
    Packages(Vec<Package>),
    /// A Java archive: its packages, and what its limits passed over.
    Archive(java::ArchiveContents),
    Error(ParseError),
}

/// A file that gave something, and the layer it came from.
#[derive(Debug, Clone)]
struct File {
    layer: usize,
    found: Found,
}

/// A path removed or replaced in a layer hides the same path, and everything under it, in
/// the layers below.
fn hide_below<V>(
    map: &mut BTreeMap<String, V>,
    path: &str,
    layer: usize,
    layer_of: impl Fn(&V) -> usize,
) {
    if map.get(path).is_some_and(|v| layer_of(v) < layer) {
        map.remove(path);
    }
    hide_children_below(map, path, layer, layer_of);
}

fn hide_children_below<V>(
    map: &mut BTreeMap<String, V>,
    dir: &str,
    layer: usize,
    layer_of: impl Fn(&V) -> usize,
) {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let under: Vec<String> = map
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(_, v)| layer_of(v) < layer)
        .map(|(k, _)| k.clone())
        .collect();
    for k in under {
        map.remove(&k);
    }
}

struct Walk<'l> {
    limits: &'l Limits,
    deadline: Instant,
    /// Files that gave something, by path.
    files: BTreeMap<String, File>,
    /// Symbolic links: path → (layer, target as written).
    links: BTreeMap<String, (usize, String)>,
    /// Fixed paths reached through links: (the path, the file it leads to).
    aliases: Vec<(String, String)>,
    status_d_alias: Option<String>,
    skipped: Vec<Skipped>,
    /// Whether executables are read as binaries (the first pass; the second reads only the
    /// files links led to).
    binaries: bool,
}

impl<'l> Walk<'l> {
    fn new(limits: &'l Limits, deadline: Instant) -> Walk<'l> {
        Walk {
            limits,
            deadline,
            files: BTreeMap::new(),
            links: BTreeMap::new(),
            aliases: Vec::new(),
            status_d_alias: None,
            skipped: Vec::new(),
            binaries: true,
        }
    }

    /// Reads every layer, keeping what the files `want` names give.
    fn pass(
        &mut self,
        layers: &[LayerRef],
        store: &mut dyn Layers,
        missing: &mut Vec<String>,
        want: &dyn Fn(&str) -> bool,
    ) -> Result<(), WalkError> {
        for (index, layer) in layers.iter().enumerate() {
            if layer.size > self.limits.max_layer_bytes {
                self.note_skipped(
                    &layer.digest,
                    format!(
                        "layer of {} bytes is larger than scan.max_layer_size ({} bytes); its files are not listed",
                        layer.size, self.limits.max_layer_bytes
                    ),
                );
                continue;
            }
            let read = |source| WalkError::Read {
                digest: layer.digest.clone(),
                source,
            };
            let Some(raw) = store.open(layer).map_err(read)? else {
                missing.push(layer.digest.clone());
                continue;
            };
            let store_failed = Rc::new(Cell::new(false));
            let timed = Deadline {
                inner: raw,
                deadline: self.deadline,
                failed: store_failed.clone(),
            };
            // An error is the store's (a storage failure: the walk stops), the clock's, or the
            // layer's own bytes' (not gzip, not a tar: the layer is reported and the walk goes
            // on with the next one).
            let outcome = match decompress(timed, &layer.media_type) {
                Ok(Ok(tar)) => self.layer(index, tar, want),
                Ok(Err(mismatch)) => {
                    self.note_skipped(&layer.digest, mismatch);
                    continue;
                }
                Err(e) => Err(read(e)),
            };
            match outcome {
                Ok(()) => {}
                Err(_) if Instant::now() > self.deadline => {
                    return Err(WalkError::TimedOut(self.limits.max_duration));
                }
                Err(WalkError::Read { source, .. }) if store_failed.get() => {
                    return Err(read(source));
                }
                Err(WalkError::Read { source, .. }) => self.note_skipped(
                    &layer.digest,
                    format!(
                        "not a readable tar stream ({source}); the files after that point are not listed"
                    ),
                ),
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    fn note_skipped(&mut self, what: &str, reason: String) {
        if !self.skipped.iter().any(|s| s.what == what) {
            self.skipped.push(Skipped {
                what: what.to_owned(),
                reason,
            });
        }
    }

    fn layer(
        &mut self,
        index: usize,
        tar: Box<dyn Read + '_>,
        want: &dyn Fn(&str) -> bool,
    ) -> Result<(), WalkError> {
        let read = |source| WalkError::Read {
            digest: String::new(),
            source,
        };
        let ours = Rc::new(Cell::new(false));
        let between = Rc::new(Cell::new(0u64));
        let guarded = HeaderGuard {
            inner: tar,
            ours: ours.clone(),
            between: between.clone(),
        };
        let mut archive = tar::Archive::new(guarded);
        for entry in archive.entries().map_err(read)? {
            let mut entry = entry.map_err(read)?;
            // The entry's content is read here, and what is not wanted of it drained, so that
            // between two entries the tar reader reads only headers (HeaderGuard).
            ours.set(true);
            let read_entry = self
                .entry(index, &mut entry, want)
                .and_then(|()| io::copy(&mut entry, &mut io::sink()).map_err(read));
            ours.set(false);
            between.set(0);
            read_entry?;
        }
        Ok(())
    }

    /// One entry of layer `index`: a whiteout, a link, or a file read if it is wanted.
    fn entry<R: Read>(
        &mut self,
        index: usize,
        entry: &mut tar::Entry<'_, R>,
        want: &dyn Fn(&str) -> bool,
    ) -> Result<(), WalkError> {
        let read = |source| WalkError::Read {
            digest: String::new(),
            source,
        };
        if Instant::now() > self.deadline {
            return Err(WalkError::TimedOut(self.limits.max_duration));
        }
        let raw_path = entry.path_bytes().into_owned();
        let Some(path) = clean(&String::from_utf8_lossy(&raw_path)) else {
            return Ok(());
        };
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        if name == ".wh..wh..opq" {
            hide_children_below(&mut self.files, dir, index, |f| f.layer);
            hide_children_below(&mut self.links, dir, index, |l| l.0);
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let hidden = join(dir, hidden);
            hide_below(&mut self.files, &hidden, index, |f| f.layer);
            hide_below(&mut self.links, &hidden, index, |l| l.0);
            return Ok(());
        }
        let kind = entry.header().entry_type();
        // Whatever was at this path below (a file, a link, a directory's contents when
        // this is not a directory) is replaced.
        self.files.remove(&path);
        self.links.remove(&path);
        if !kind.is_dir() {
            hide_children_below(&mut self.files, &path, index, |f| f.layer);
            hide_children_below(&mut self.links, &path, index, |l| l.0);
        }
        if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            self.links.insert(path, (index, target));
            self.check_paths()?;
            return Ok(());
        }
        if kind.is_hard_link() {
            // A second name for a file earlier in this layer: what it gave, under this name.
            let target = entry
                .link_name_bytes()
                .and_then(|t| clean(&String::from_utf8_lossy(&t)));
            if let Some(file) = target.and_then(|t| self.files.get(&t)).cloned()
                && file.layer == index
                && want(&path)
            {
                let found = match file.found {
                    Found::Packages(mut ps) => {
                        for p in &mut ps {
                            p.path = path.clone();
                        }
                        Found::Packages(ps)
                    }
                    other => other,
                };
                self.keep(path, index, found)?;
            }
            return Ok(());
        }
        if !kind.is_file() {
            return Ok(());
        }
        let size = entry.header().size().map_err(read)?;
        let by_path = want(&path);
        let executable = self.binaries && entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
        if !(by_path || executable && size >= binary::HEAD_LEN as u64) {
            return Ok(());
        }
        let mut data = Vec::new();
        if !by_path {
            // An executable: its first bytes say whether it is a binary worth reading whole.
            let mut head = [0u8; binary::HEAD_LEN];
            entry.read_exact(&mut head).map_err(read)?;
            if !binary::is_candidate(&path, &head) {
                return Ok(());
            }
            data.extend_from_slice(&head);
        }
        if size > self.limits.max_file_bytes {
            self.note_skipped(&path, too_large(size, self.limits.max_file_bytes));
            return Ok(());
        }
        data.reserve_exact((size as usize).saturating_sub(data.len()));
        entry.read_to_end(&mut data).map_err(read)?;
        if !by_path {
            // A binary that holds no module list is not remembered.
            let found = catalogue(&path, &path, &data, self.limits);
            if !matches!(&found, Found::Packages(p) if p.is_empty()) {
                self.keep(path, index, found)?;
            }
            return Ok(());
        }
        let as_path = self.read_as(&path);
        let found = catalogue(&as_path, &path, &data, self.limits);
        self.keep(path, index, found)
    }

    /// Remembers what the file at `path` of layer `layer` gave.
    fn keep(&mut self, path: String, layer: usize, found: Found) -> Result<(), WalkError> {
        self.files.insert(path, File { layer, found });
        self.check_paths()
    }

    /// The path a file is read as: its own, or in the second pass the fixed path (or the
    /// `status.d` directory) a link led to it from.
    fn read_as(&self, path: &str) -> String {
        if wanted(path).is_some() {
            return path.to_owned();
        }
        if let Some((fixed, _)) = self.aliases.iter().find(|(_, real)| real == path) {
            return fixed.clone();
        }
        if let Some(dir) = &self.status_d_alias
            && let Some(name) = path.strip_prefix(dir.as_str())
        {
            return format!("{STATUS_D_DIR}{name}");
        }
        path.to_owned()
    }

    fn check_paths(&self) -> Result<(), WalkError> {
        if self.files.len() + self.links.len() > self.limits.max_paths {
            return Err(WalkError::TooManyPaths(self.limits.max_paths));
        }
        Ok(())
    }

    /// Where `path` leads through the links, if it leads anywhere (at most 40 links, as
    /// Linux allows).
    fn resolve(&self, path: &str) -> Option<String> {
        let mut pending: Vec<String> = path.split('/').rev().map(str::to_owned).collect();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            match part.as_str() {
                "" | "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            done.push(part);
            let here = done.join("/");
            if let Some((_, target)) = self.links.get(&here) {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                pending.extend(target.split('/').rev().map(str::to_owned));
            }
        }
        Some(done.join("/"))
    }

    fn finish(mut self, missing: Vec<String>) -> Inventory {
        let os = os_release::PATHS.iter().find_map(|p| {
            let real = self
                .aliases
                .iter()
                .find(|(fixed, _)| fixed == p)
                .map(|(_, real)| real.as_str())
                .unwrap_or(p);
            match self.files.get(real).map(|f| &f.found) {
                Some(Found::Os(os)) => os.clone(),
                _ => None,
            }
        });
        // An rpm database converted to SQLite may leave the old one beside it (RHEL 9 keeps
        // `Packages` after `rpmdb --rebuilddb`); rpm reads the SQLite one, so only it counts.
        let stale: Vec<String> = self
            .files
            .keys()
            .filter(|p| p.ends_with("/Packages") || p.ends_with("/Packages.db"))
            .filter(|p| {
                let dir = &p[..p.rfind('/').unwrap_or(0)];
                self.files.contains_key(&format!("{dir}/rpmdb.sqlite"))
            })
            .cloned()
            .collect();
        for p in stale {
            self.files.remove(&p);
        }
        let mut packages = Vec::new();
        let mut errors = Vec::new();
        for (_, file) in std::mem::take(&mut self.files) {
            match file.found {
                Found::Packages(ps) => packages.extend(ps.into_iter().map(|mut p| {
                    p.layer = Some(file.layer);
                    p
                })),
                Found::Archive(a) => {
                    packages.extend(a.packages.into_iter().map(|mut p| {
                        p.layer = Some(file.layer);
                        p
                    }));
                    self.skipped.extend(a.skipped);
                    errors.extend(a.errors);
                }
                Found::Error(e) => errors.push(e),
                Found::Os(_) => {}
            }
        }
        for p in &mut packages {
            p.purl = crate::purl::try_purl(p, os.as_ref());
        }
        let coverage = if missing.is_empty() {
            Coverage::Complete
        } else {
            Coverage::Incomplete {
                missing_layers: missing,
            }
        };
        Inventory {
            coverage,
            os,
            packages,
            skipped: self.skipped,
            errors,
        }
    }
}

fn too_large(size: u64, max: u64) -> String {
    format!("file of {size} bytes is larger than scan.max_file_size ({max} bytes)")
}

/// A path as the image sees it: relative, without `.` parts; `None` for one that climbs out
/// of the root or names the root itself.
fn clean(raw: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// How a layer's tar stream is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// What the layer's media type says (OCI `…tar+gzip`, Docker `…tar.gzip`); `None` for a
    /// media type that says nothing (the first bytes decide).
    fn of_media_type(media_type: &str) -> Option<Compression> {
        if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
            Some(Compression::Gzip)
        } else if media_type.ends_with("+zstd") {
            Some(Compression::Zstd)
        } else if media_type.ends_with(".tar") {
            Some(Compression::None)
        } else {
            None
        }
    }

    fn of_content(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The tar stream inside a layer, decompressed as its media type says once its first bytes
/// agree (`Ok(Err(why))` when they do not: the layer is skipped and reported).
fn decompress<'r>(
    raw: impl Read + 'r,
    media_type: &str,
) -> io::Result<Result<Box<dyn Read + 'r>, String>> {
    let mut buffered = BufReader::with_capacity(256 << 10, raw);
    let found = Compression::of_content(buffered.fill_buf()?);
    if let Some(said) = Compression::of_media_type(media_type)
        && said != found
    {
        return Ok(Err(format!(
            "its media type {media_type} says {said:?} but its content is {found:?}; not read"
        )));
    }
    Ok(Ok(match found {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Compression::None => Box::new(buffered),
    }))
}

/// A reader that fails with `TimedOut` once the walk's time is up, so that no single layer or
/// file can hold a scan past its limit.
/// It also notes when the store (not the layer's content) failed a read.
struct Deadline<R> {
    inner: R,
    deadline: Instant,
    failed: Rc<Cell<bool>>,
}

impl<R: Read> Read for Deadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() > self.deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "scan.timeout"));
        }
        self.inner.read(buf).inspect_err(|_| self.failed.set(true))
    }
}

/// The most bytes the tar reader may read between two entries: their headers, with GNU long
/// names and PAX extensions, which it holds in memory whole. A layer past it is reported as
/// not readable, so that a crafted header cannot make a scan hold gigabytes.
pub const HEADERS_MAX: u64 = 1 << 20;

/// Counts what the tar reader reads on its own (headers), as opposed to the walker's reads
/// of entry contents (`ours`), and fails past [`HEADERS_MAX`].
struct HeaderGuard<R> {
    inner: R,
    ours: Rc<Cell<bool>>,
    between: Rc<Cell<u64>>,
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if !self.ours.get() {
            let total = self.between.get() + n as u64;
            self.between.set(total);
            if total > HEADERS_MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the headers of one tar entry are larger than {HEADERS_MAX} bytes"),
                ));
            }
        }
        Ok(n)
    }
}
