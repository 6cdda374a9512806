"""Builds OCI images and layouts from Python, with fresh random content (so fresh digests) each run.

An `Image` is one platform's manifest, config and gzip layers; an `Index` is a multi-platform
image index over several `Image`s. `write_layout` writes either as an OCI image layout directory
(`oci-layout`, `index.json`, `blobs/sha256/...`) that skopeo reads with `oci:<dir>:<tag>`, and
`layout_tar` packs such a directory into the archive `ctr images import` takes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

# Accept header asking for any kind of manifest, for registry API checks.
ACCEPT_ANY_MANIFEST = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return sha256(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


def random_tar(files: dict[str, bytes] | None = None, random_size: int = 4096) -> bytes:
    """An uncompressed tar holding `files` plus one file of random bytes (fresh digest per call)."""
    entries = dict(files or {})
    entries.setdefault(f"random-{os.urandom(4).hex()}.bin", os.urandom(random_size))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(entries.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@dataclass
class Image:
    """One platform's image: gzip layers, a config naming their diff_ids, and a manifest."""

    architecture: str = "amd64"
    os: str = "linux"
    layer_tars: list[bytes] = field(default_factory=lambda: [random_tar()], repr=False)
    annotations: dict[str, str] | None = None

    def __post_init__(self) -> None:
        self.layers = [Blob(OCI_LAYER_GZIP, gzip.compress(t, mtime=0)) for t in self.layer_tars]
        config = {
            "architecture": self.architecture,
            "os": self.os,
            "config": {"Cmd": ["/nothing"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(t) for t in self.layer_tars]},
            "history": [{"created_by": "berth e2e images.py"} for _ in self.layer_tars],
        }
        self.config = Blob(OCI_CONFIG, canonical_json(config))
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.config.descriptor(),
            "layers": [layer.descriptor() for layer in self.layers],
        }
        if self.annotations:
            manifest["annotations"] = self.annotations
        self.manifest = Blob(OCI_MANIFEST, canonical_json(manifest))

    @property
    def platform(self) -> dict:
        return {"architecture": self.architecture, "os": self.os}

    def blobs(self) -> list[Blob]:
        return [self.manifest, self.config, *self.layers]

    def root(self) -> Blob:
        return self.manifest


@dataclass
class Index:
    """A multi-platform image index over `images`."""

    images: list[Image]

    def __post_init__(self) -> None:
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [img.manifest.descriptor(platform=img.platform) for img in self.images],
        }
        self.manifest = Blob(OCI_INDEX, canonical_json(index))

    def blobs(self) -> list[Blob]:
        out = [self.manifest]
        for img in self.images:
            out.extend(img.blobs())
        return out

    def root(self) -> Blob:
        return self.manifest


def write_layout(path: Path, content: Image | Index, tag: str, extra_annotations: dict | None = None) -> Path:
    """Write `content` as an OCI image layout at `path`, its root named `tag` in index.json."""
    blob_dir = path / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    for blob in content.blobs():
        (blob_dir / blob.digest.split(":", 1)[1]).write_bytes(blob.data)
    annotations = {"org.opencontainers.image.ref.name": tag, **(extra_annotations or {})}
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [content.root().descriptor(annotations=annotations)],
    }
    (path / "index.json").write_text(json.dumps(index))
    return path


def layout_tar(layout: Path) -> bytes:
    """The OCI layout directory packed as a tar archive (what `ctr images import` reads)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for item in sorted(layout.rglob("*")):
            tar.add(item, arcname=str(item.relative_to(layout)), recursive=False)
    return buf.getvalue()


def layout_blob(layout: Path, digest: str) -> bytes:
    algorithm, hexpart = digest.split(":", 1)
    return (layout / "blobs" / algorithm / hexpart).read_bytes()


def layout_root(layout: Path, tag: str | None = None) -> dict:
    """The descriptor of the layout's root manifest (the one named `tag`, or the only one)."""
    manifests = json.loads((layout / "index.json").read_text())["manifests"]
    if tag is not None:
        manifests = [
            m for m in manifests if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag
        ]
    assert len(manifests) == 1, f"expected one root manifest in {layout}/index.json, found {manifests}"
    return manifests[0]
