//! What is installed in an image: the package inventory, read from its layers as streams
//! (never extracted to disk), and SBOMs made from it.
//!
//! - [`catalog`]: the parsers, one module per package database or manifest format, each a pure
//!   function from a file's bytes to the packages it records.
//! - [`walk`]: the layer walker, which applies whiteouts and symbolic links across layers and
//!   hands the cataloguers only the files they ask for, within [`Limits`].

pub mod catalog;
pub mod image;
pub mod purl;
pub mod sbom;
pub mod vulndb;
pub mod walk;

use serde::{Deserialize, Serialize};

/// Where a package's name and version come from, and so which vulnerability records apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    /// Debian and Ubuntu packages (dpkg).
    Deb,
    /// Alpine and Wolfi packages (apk).
    Apk,
    /// RPM packages (RHEL, Fedora, SUSE, Mariner...).
    Rpm,
    /// Python packages installed in site-packages.
    Pypi,
    /// Node packages installed in node_modules.
    Npm,
    /// Go modules compiled into a binary (and `stdlib`, the Go version).
    Golang,
    /// Rust crates (Cargo.lock, cargo-auditable binaries).
    Cargo,
    /// Java archives; the name is `groupId:artifactId`.
    Maven,
    /// Ruby gems.
    Gem,
    /// PHP packages installed by Composer.
    Composer,
    /// .NET packages (NuGet).
    Nuget,
}

/// One package found in an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub ecosystem: Ecosystem,
    /// As the ecosystem spells it: a Debian binary package name, a Python project name as
    /// written in its metadata (compare with [`catalog::python::normalize`]), a Go module path,
    /// `groupId:artifactId` for Maven.
    pub name: String,
    /// The full version: dpkg `[epoch:]upstream[-revision]`, rpm `[epoch:]version-release`
    /// (see [`Package::rpm`] for the parts), apk `1.2.3-r4`, others as recorded.
    pub version: String,
    /// The distribution's source package, which its advisories are keyed by (dpkg `Source:`,
    /// apk `o:`, the rpm source RPM's name); for OS packages without one, the binary's own.
    pub source: Option<SourcePackage>,
    pub arch: Option<String>,
    /// Licences as the metadata states them (informative).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub licenses: Vec<String>,
    /// The file it was read from, relative to the image root (no leading `/`); for a package
    /// inside an archive, the archive's path then `!` and the path inside, per level.
    pub path: String,
    /// The layer (index in the manifest's `layers`) the file came from; set by the walker.
    pub layer: Option<usize>,
    /// RPM only: the header's epoch, version and release, apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<RpmVersion>,
    /// The package URL, set by the walker once the distribution is known
    /// ([`purl::try_purl`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePackage {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpmVersion {
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
    /// The source RPM's file name, e.g. `hello-0.0.1-rls.src.rpm`.
    pub source_rpm: Option<String>,
}

impl Package {
    /// A package with no source, arch, licences or layer.
    pub fn new(ecosystem: Ecosystem, name: &str, version: &str, path: &str) -> Package {
        Package {
            ecosystem,
            name: name.to_owned(),
            version: version.to_owned(),
            source: None,
            arch: None,
            licenses: Vec::new(),
            path: path.to_owned(),
            layer: None,
            rpm: None,
            purl: None,
        }
    }
}

/// The distribution an image is built on, from `etc/os-release` (or `usr/lib/os-release`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsRelease {
    /// `ID`, e.g. `debian`, `alpine`, `rhel`.
    pub id: String,
    /// `VERSION_ID`, e.g. `12`, `3.18.4`.
    pub version_id: Option<String>,
    /// `VERSION_CODENAME`, e.g. `bookworm`.
    pub version_codename: Option<String>,
    /// `PRETTY_NAME`, e.g. `Debian GNU/Linux 12 (bookworm)`.
    pub pretty_name: Option<String>,
}

/// Whether an inventory covers the whole image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Coverage {
    /// The registry holds every layer; what could not be read (a layer or file past a limit,
    /// a layer that is not a readable tar) is listed in [`Inventory::skipped`].
    Complete,
    /// Layers the registry does not hold (a sparse image); what they hold is not listed.
    Incomplete { missing_layers: Vec<String> },
    /// Not an image: a signature, an SBOM, another artifact, or encrypted layers.
    NotScannable { reason: String },
}

/// Something the walker did not read, and why (a limit, named by its setting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// A layer digest, or a file's path in the image.
    pub what: String,
    pub reason: String,
}

/// What is installed in one image (one platform of an index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub coverage: Coverage,
    pub os: Option<OsRelease>,
    pub packages: Vec<Package>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
    /// Files that looked like package databases but could not be parsed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ParseError>,
}

/// Why a file could not be read as what its path says it is. The walker reports it beside the
/// inventory (the rest of the image is still catalogued).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ParseError {
    pub path: String,
    pub reason: String,
}

impl ParseError {
    pub fn new(path: &str, reason: impl Into<String>) -> ParseError {
        ParseError {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}
