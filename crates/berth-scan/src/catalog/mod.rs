//! The parsers: each takes a file's path in the image and its bytes and returns the packages
//! the file records, as pure functions (no I/O), so that they are unit- and property-tested
//! on their own and the walker decides what to read.

pub mod binary;
pub mod dotnet;
pub mod golang;
pub mod java;
pub mod node;
pub mod php;
pub mod python;
pub mod rpm;
pub mod ruby;
pub mod rust;

pub mod apk;
pub mod dpkg;
pub mod os_release;
