//! The manifest/index parser and validator (`PUT /v2/<name>/manifests/<reference>`).
//!
//! Input: one selector byte for the request's `Content-Type` (`'0'`..`'9'`, see
//! [`CONTENT_TYPES`]; any other byte wraps around), then the manifest bytes.
#![no_main]

use berth_core::Digest;
use berth_core::json;
use berth_core::manifest::{
    self, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, Descriptor,
    ManifestKind, NONDISTRIBUTABLE_LAYERS, OCI_INDEX, OCI_MANIFEST, parse_manifest,
};
use libfuzzer_sys::fuzz_target;

/// What the selector byte `'0' + i` sends as the `Content-Type` (parameters already stripped).
const CONTENT_TYPES: [Option<&str>; 10] = [
    None,
    Some(OCI_MANIFEST),
    Some(OCI_INDEX),
    Some(DOCKER_MANIFEST),
    Some(DOCKER_MANIFEST_LIST),
    Some(DOCKER_SCHEMA1),
    Some(DOCKER_SCHEMA1_SIGNED),
    Some("application/json"),
    Some(""),
    Some("  application/vnd.oci.image.index.v1+json\t"),
];

fn check_descriptor(d: &Descriptor, what: &str) {
    assert!(!d.media_type.is_empty(), "{what}: empty mediaType accepted");
    let printed = d.digest.to_string();
    assert_eq!(
        Digest::parse(&printed).as_ref(),
        Ok(&d.digest),
        "{what}: digest {printed} does not re-parse"
    );
    assert_eq!(d.digest.hex().len(), d.digest.algorithm().hex_len());
    assert!(
        d.digest
            .hex()
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{what}: digest hex is not a safe path component"
    );
    if d.is_foreign() {
        assert!(!d.urls.is_empty());
        assert!(NONDISTRIBUTABLE_LAYERS.contains(&d.media_type.as_str()));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[selector.wrapping_sub(b'0') as usize % CONTENT_TYPES.len()];
    let Ok(m) = parse_manifest(bytes, content_type) else {
        return;
    };

    // Deterministic, and only documents within the nesting limit get this far.
    assert_eq!(parse_manifest(bytes, content_type).as_ref(), Ok(&m));
    assert!(json::depth(bytes) <= json::MAX_DEPTH);

    // The stored media type is one Berth serves, and agrees with the kind and the request.
    assert!(
        manifest::is_manifest_type(&m.media_type),
        "{:?}",
        m.media_type
    );
    assert_eq!(
        m.kind == ManifestKind::Index,
        manifest::is_index_type(&m.media_type)
    );
    let ct = content_type.map(str::trim).filter(|c| !c.is_empty());
    if let Some(ct) = ct.filter(|c| manifest::is_manifest_type(c)) {
        assert_eq!(
            m.media_type, ct,
            "stored type differs from the Content-Type"
        );
    }
    assert_ne!(ct, Some(DOCKER_SCHEMA1));
    assert_ne!(ct, Some(DOCKER_SCHEMA1_SIGNED));

    match m.kind {
        ManifestKind::Index => {
            assert!(m.config.is_none() && m.layers.is_empty());
            if m.media_type == DOCKER_MANIFEST_LIST {
                assert!(m.artifact_type.is_none());
            }
            assert_eq!(m.required_blobs().count(), 0);
        }
        ManifestKind::Image => {
            let config = m.config.as_ref().expect("an image without config");
            assert!(m.manifests.is_empty());
            if m.media_type == DOCKER_MANIFEST {
                assert!(!m.layers.is_empty());
            }
            assert!(m.artifact_type.is_some());
            // Required: the config first, then exactly the distributable layers, in order.
            let required: Vec<&Descriptor> = m.required_blobs().collect();
            let expected: Vec<&Descriptor> = std::iter::once(config)
                .chain(m.layers.iter().filter(|l| !l.is_foreign()))
                .collect();
            assert_eq!(required, expected);
            assert!(m.child_for_platform("linux", "amd64").is_none());
        }
    }

    for (i, d) in m
        .config
        .iter()
        .chain(&m.layers)
        .chain(&m.manifests)
        .chain(&m.subject)
        .enumerate()
    {
        check_descriptor(d, &format!("descriptor {i}"));
    }

    // Every platform an index names finds its first child with that platform.
    for (i, child) in m.manifests.iter().enumerate() {
        if let Some(p) = &child.platform {
            let found = m
                .child_for_platform(&p.os, &p.architecture)
                .expect("a listed platform is not found");
            let first = m
                .manifests
                .iter()
                .position(|c| {
                    c.platform
                        .as_ref()
                        .is_some_and(|q| q.os == p.os && q.architecture == p.architecture)
                })
                .unwrap();
            assert!(first <= i);
            assert_eq!(found, &m.manifests[first]);
        }
    }
});
