"""Image layers from directory trees, and OCI image layouts of them.

A layer is the tree packed as a tar archive (owners, modes, symbolic and hard links kept), gzip
compressed; a whiteout layer holds the `.wh.<name>` marker files that delete paths of the layers
below it (OCI image spec, "Representing Changes"). `FilesystemImage` has the interface of
clients/images.py's `Image` (manifest, config, layers, platform, blobs(), root()), so its
`Index` and `write_layout` take it as they are.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from clients.images import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Blob, canonical_json, sha256

# gzip level 1: the layers are ~120 MB of tar and compression dominates the time to build them;
# how well they compress does not matter here.
GZIP_LEVEL = 1


def tree_tar(root: Path) -> bytes:
    """`root`'s contents as an uncompressed tar, paths relative to it (`bin`, `etc/passwd`, ...).
    Sockets, pipes and device nodes are left out: an image layer does not carry them."""

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if info.ischr() or info.isblk() or info.isfifo():
            return None
        return info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=child.name, filter=keep)
    return buf.getvalue()


def whiteout_tar(deleted: list[str], opaque: dict[str, dict[str, bytes]] | None = None) -> bytes:
    """A layer that deletes `deleted` (files or whole directories) from the layers below, and
    makes each directory of `opaque` opaque (`.wh..wh..opq`: nothing of the layers below shows
    through) while adding the files it maps to, relative to that directory."""
    buf = io.BytesIO()
    directories: set[PurePosixPath] = set()

    def add(name: str, data: bytes) -> None:
        # Each file's directories first, as a runtime's layer diff has them.
        for parent in reversed(PurePosixPath(name).parents[:-1]):
            if parent not in directories:
                directories.add(parent)
                info = tarfile.TarInfo(str(parent))
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                info.mtime = 1_700_000_000
                tar.addfile(info)
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = 1_700_000_000
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in deleted:
            p = PurePosixPath(path)
            add(str(p.parent / f".wh.{p.name}"), b"")
        for directory, files in (opaque or {}).items():
            add(f"{directory}/.wh..wh..opq", b"")
            for name, data in sorted(files.items()):
                add(f"{directory}/{name}", data)
    return buf.getvalue()


def compress(tars: list[bytes]) -> list[Blob]:
    """The tars as gzip layer blobs, compressed in parallel (zlib releases the GIL)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return [
            Blob(OCI_LAYER_GZIP, data)
            for data in pool.map(lambda t: gzip.compress(t, compresslevel=GZIP_LEVEL, mtime=0), tars)
        ]


@dataclass
class FilesystemImage:
    """One platform's image over already compressed `layers` (with their tars' `diff_ids`)."""

    layers: list[Blob]
    diff_ids: list[str]
    history: list[str]
    architecture: str = "amd64"
    os: str = "linux"
    annotations: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert len(self.layers) == len(self.diff_ids) == len(self.history)
        config = {
            "architecture": self.architecture,
            "os": self.os,
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/bash"],
            },
            "rootfs": {"type": "layers", "diff_ids": list(self.diff_ids)},
            "history": [{"created_by": h} for h in self.history],
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

    @classmethod
    def from_tars(cls, tars: list[tuple[str, bytes]], **kwargs) -> FilesystemImage:
        """An image whose layers are `tars` ((history line, uncompressed tar) pairs), in order."""
        return cls(
            layers=compress([t for _, t in tars]),
            diff_ids=[sha256(t) for _, t in tars],
            history=[h for h, _ in tars],
            **kwargs,
        )

    @property
    def platform(self) -> dict:
        return {"architecture": self.architecture, "os": self.os}

    def blobs(self) -> list[Blob]:
        return [self.manifest, self.config, *self.layers]

    def root(self) -> Blob:
        return self.manifest
