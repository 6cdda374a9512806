"""containerd's `ctr` against the registry: push, then pull by tag, by digest and by platform.

Each image is imported into containerd from an OCI archive written by images.py and pushed with
`ctr images push` (containerd's POST-then-PUT upload); the pushing namespace then drops the image
and its content, so the pull (in a namespace of its own) has to fetch every byte from the
registry.
"""

from __future__ import annotations

import re
import uuid

from .images import Image, Index, layout_tar, write_layout


def images_ls(containerd, namespace: str) -> dict[str, str]:
    """ref -> digest, from `ctr images ls` (columns: REF TYPE DIGEST SIZE PLATFORMS LABELS)."""
    lines = containerd.ctr(namespace, "images", "ls").stdout.splitlines()
    assert lines and lines[0].split()[:3] == ["REF", "TYPE", "DIGEST"], lines
    return {line.split()[0]: line.split()[2] for line in lines[1:] if line.strip()}


def push_with_ctr(containerd, tmp_path, content, ref: str, tag: str) -> None:
    """Import `content` into a scratch namespace, `ctr images push` it as `ref`, then forget it."""
    namespace = f"push-{uuid.uuid4().hex[:8]}"
    layout = write_layout(tmp_path / "layout", content, tag)
    archive = tmp_path / "image.tar"
    archive.write_bytes(layout_tar(layout))
    base = ref.rsplit(":", 1)[0]
    containerd.ctr(namespace, "images", "import", "--no-unpack", "--all-platforms", "--base-name", base, str(archive))
    assert images_ls(containerd, namespace) == {ref: content.root().digest}
    containerd.ctr(namespace, "images", "push", *containerd.registry_flags(), ref)
    # Forget the image and every byte imported (--sync: garbage-collect before returning).
    containerd.ctr(namespace, "images", "rm", "--sync", ref)
    leftover = containerd.ctr(namespace, "content", "ls", "-q").stdout.split()
    if leftover:
        containerd.ctr(namespace, "content", "rm", *leftover, check=False)
    assert containerd.ctr(namespace, "content", "ls", "-q").stdout.split() == []


def content_bytes(containerd, namespace: str, digest: str) -> bytes:
    return containerd.ctr(namespace, "content", "get", digest, binary=True).stdout


def assert_unpacked(containerd, namespace: str, ref: str) -> None:
    """`ctr images check`: all content present (complete) and unpacked into a snapshot."""
    lines = containerd.ctr(namespace, "images", "check").stdout.splitlines()
    row = next((line for line in lines[1:] if line.split()[0] == ref), None)
    assert row is not None, lines
    assert re.search(r"\bcomplete \((\d+)/\1\)", row), row
    assert row.split()[-1] == "true", row


def test_pull_by_tag(containerd, api, registry, repo, tmp_path):
    image = Image()
    ref = f"{registry.host}/{repo}:v1"
    push_with_ctr(containerd, tmp_path, image, ref, "v1")
    assert api.manifest_digest(repo, "v1") == image.manifest.digest

    namespace = f"pull-{uuid.uuid4().hex[:8]}"
    containerd.ctr(namespace, "images", "pull", *containerd.registry_flags(), ref)

    assert images_ls(containerd, namespace) == {ref: image.manifest.digest}
    for blob in image.blobs():
        assert content_bytes(containerd, namespace, blob.digest) == blob.data
    assert_unpacked(containerd, namespace, ref)


def test_pull_by_digest(containerd, api, registry, repo, tmp_path):
    image = Image()
    push_with_ctr(containerd, tmp_path, image, f"{registry.host}/{repo}:v1", "v1")
    assert api.manifest_digest(repo, image.manifest.digest) == image.manifest.digest

    namespace = f"pull-{uuid.uuid4().hex[:8]}"
    ref = f"{registry.host}/{repo}@{image.manifest.digest}"
    containerd.ctr(namespace, "images", "pull", *containerd.registry_flags(), ref)

    assert images_ls(containerd, namespace) == {ref: image.manifest.digest}
    for blob in image.blobs():
        assert content_bytes(containerd, namespace, blob.digest) == blob.data
    assert_unpacked(containerd, namespace, ref)


def test_pull_one_platform_of_an_index(containerd, api, registry, repo, tmp_path):
    amd64, arm64 = Image("amd64"), Image("arm64")
    index = Index([amd64, arm64])
    ref = f"{registry.host}/{repo}:multi"
    push_with_ctr(containerd, tmp_path, index, ref, "multi")
    assert api.manifest_digest(repo, "multi") == index.manifest.digest
    for image in (amd64, arm64):
        assert api.manifest_digest(repo, image.manifest.digest) == image.manifest.digest

    namespace = f"pull-{uuid.uuid4().hex[:8]}"
    containerd.ctr(namespace, "images", "pull", *containerd.registry_flags(), "--platform", "linux/arm64", ref)

    # The image is the index; only the arm64 branch of it was fetched.
    assert images_ls(containerd, namespace) == {ref: index.manifest.digest}
    for blob in (index.manifest, *arm64.blobs()):
        assert content_bytes(containerd, namespace, blob.digest) == blob.data
    present = set(containerd.ctr(namespace, "content", "ls", "-q").stdout.split())
    assert not present & {blob.digest for blob in amd64.blobs()}, "content of the amd64 image was fetched too"
