//! Which manifests are images whose layers can be walked: an image manifest (OCI or Docker
//! schema 2) whose config is an image config and whose layers are all tar layers; an index
//! is inventoried per platform child. Everything else is "not scannable", with the reason:
//! signatures (cosign's simple-signing layers, notation envelopes), SBOMs and attestations,
//! other artifacts (Helm charts, WASM modules...), encrypted layers.

use serde::Deserialize;

use crate::walk::LayerRef;

/// What a manifest is, for the scanner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scannable {
    /// An image: its layers, bottom first.
    Image(Vec<LayerRef>),
    /// An index: its children with their platforms (`os/arch[/variant]`; None when the entry
    /// names none).
    Index(Vec<Child>),
    /// Not an image, and why.
    Not(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub digest: String,
    pub media_type: String,
    pub platform: Option<String>,
}

const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
const INDEXES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// BuildKit's attestation manifests in an index (`vnd.docker.reference.type`), which are not
/// a platform.
const ATTESTATION_PLATFORM: &str = "unknown/unknown";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    schema_version: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

/// Whether `media_type` is a layer the walker reads (a tar, plain or compressed).
pub fn is_tar_layer(media_type: &str) -> bool {
    let base = media_type
        .strip_suffix("+gzip")
        .or_else(|| media_type.strip_suffix("+zstd"))
        .unwrap_or(media_type);
    matches!(
        base,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.diff.tar"
    )
}

/// What the manifest `payload` (served with `media_type`) is, for the scanner.
pub fn classify(media_type: &str, payload: &[u8]) -> Scannable {
    let m: Manifest = match serde_json::from_slice(payload) {
        Ok(m) => m,
        Err(e) => return Scannable::Not(format!("the manifest is not valid JSON: {e}")),
    };
    let media_type = m.media_type.as_deref().unwrap_or(media_type);
    if m.schema_version == Some(1) {
        return Scannable::Not("Docker schema 1 manifests are not scanned".into());
    }
    if INDEXES.contains(&media_type) || (m.manifests.is_some() && m.layers.is_none()) {
        let children = m
            .manifests
            .unwrap_or_default()
            .into_iter()
            .map(|d| Child {
                platform: d.platform.map(|p| match p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                }),
                digest: d.digest,
                media_type: d.media_type,
            })
            .filter(|c| c.platform.as_deref() != Some(ATTESTATION_PLATFORM))
            .collect();
        return Scannable::Index(children);
    }
    let Some(config) = m.config else {
        return Scannable::Not("the manifest has no config".into());
    };
    if !IMAGE_CONFIGS.contains(&config.media_type.as_str()) {
        return Scannable::Not(format!(
            "an artifact of type {}, not an image",
            m.artifact_type.as_deref().unwrap_or(&config.media_type)
        ));
    }
    if let Some(t) = m.artifact_type.as_deref() {
        return Scannable::Not(format!("an artifact of type {t}, not an image"));
    }
    let layers = m.layers.unwrap_or_default();
    if let Some(l) = layers.iter().find(|l| l.media_type.contains("+encrypted")) {
        return Scannable::Not(format!("layer {} is encrypted", l.digest));
    }
    if let Some(l) = layers.iter().find(|l| !is_tar_layer(&l.media_type)) {
        return Scannable::Not(format!(
            "layer {} is {}, not a filesystem layer (a signature, SBOM or other artifact)",
            l.digest, l.media_type
        ));
    }
    Scannable::Image(
        layers
            .into_iter()
            .map(|l| LayerRef {
                digest: l.digest,
                media_type: l.media_type,
                size: l.size,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

    fn manifest(config: &str, layer: &str, extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI}",{extra}"config":{{"mediaType":"{config}","digest":"sha256:c","size":2}},"layers":[{{"mediaType":"{layer}","digest":"sha256:l","size":7}}]}}"#
        )
    }

    #[test]
    fn images_indexes_and_what_is_not_scannable() {
        let image = manifest(
            IMAGE_CONFIGS[0],
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "",
        );
        assert_eq!(
            classify(OCI, image.as_bytes()),
            Scannable::Image(vec![LayerRef {
                digest: "sha256:l".into(),
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                size: 7,
            }])
        );
        // A cosign signature: an image config, but a simple-signing layer.
        let sig = manifest(
            IMAGE_CONFIGS[0],
            "application/vnd.dev.cosign.simplesigning.v1+json",
            "",
        );
        assert!(
            matches!(classify(OCI, sig.as_bytes()), Scannable::Not(r) if r.contains("simplesigning"))
        );
        let sbom = manifest(
            "application/vnd.oci.empty.v1+json",
            "application/spdx+json",
            r#""artifactType":"application/spdx+json","#,
        );
        assert!(matches!(classify(OCI, sbom.as_bytes()), Scannable::Not(r) if r.contains("spdx")));
        let encrypted = manifest(
            IMAGE_CONFIGS[0],
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            "",
        );
        assert!(
            matches!(classify(OCI, encrypted.as_bytes()), Scannable::Not(r) if r.contains("encrypted"))
        );
        let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b","size":1,"platform":{"os":"unknown","architecture":"unknown"}}]}"#;
        assert_eq!(
            classify(INDEXES[0], index.as_bytes()),
            Scannable::Index(vec![Child {
                digest: "sha256:a".into(),
                media_type: OCI.into(),
                platform: Some("linux/arm64/v8".into()),
            }])
        );
    }

    proptest! {
        #[test]
        fn any_bytes_classify_without_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = classify(OCI, &data);
        }
    }
}
