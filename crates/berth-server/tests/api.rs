//! The OCI Distribution API in-process: the router driven with `tower::ServiceExt::oneshot`,
//! no network, a fresh data directory and database per test (STYLE.md, tests level 2).
//! Every test states the status, headers and OCI error code a client relies on.

mod common;

#[path = "api/base.rs"]
mod base;
#[path = "api/blobs.rs"]
mod blobs;
#[path = "api/hardening.rs"]
mod hardening;
#[path = "api/listings.rs"]
mod listings;
#[path = "api/manifests.rs"]
mod manifests;
#[path = "api/names.rs"]
mod names;
#[path = "api/referrers.rs"]
mod referrers;
#[path = "api/scan.rs"]
mod scan;
#[path = "api/uploads.rs"]
mod uploads;
