//! Pure types and rules of the registry, with no I/O and no async: digests and hashing,
//! repository and tag names, manifest parsing and validation, byte ranges and
//! the configuration tree. Everything here is unit- and property-tested in place.

pub mod access;
pub mod admin;
pub mod config;
pub mod credentials;
pub mod cvss;
pub mod digest;
pub mod json;
pub mod manifest;
pub mod name;
pub mod range;
pub mod version;

pub use digest::{Algorithm, Digest, Digester};
pub use name::{Reference, RepoName, TagName};
