"""skopeo (containers/image) against the registry.

Images are OCI layouts written by images.py with random layers, so every run pushes blobs the
registry has never seen. What comes back out is compared byte for byte with what went in.
"""

from __future__ import annotations

import json

from .images import OCI_INDEX, OCI_MANIFEST, Image, Index, layout_blob, layout_root, random_tar, write_layout


def push(skopeo, tmp_path, content, repo: str, tag: str, *extra: str) -> None:
    layout = write_layout(tmp_path / f"in-{tag}", content, tag)
    skopeo.copy(f"oci:{layout}:{tag}", skopeo.ref(repo, tag), *extra)


def raw_manifest(skopeo, repo: str, reference: str) -> bytes:
    return skopeo.on_registry("inspect", "--raw", skopeo.ref(repo, reference), binary=True).stdout


def test_copy_image_in_and_out(skopeo, api, repo, tmp_path):
    image = Image(layer_tars=[random_tar(), random_tar({"etc/hello.txt": b"hello from berth\n"})])
    push(skopeo, tmp_path, image, repo, "v1")

    # The registry holds the manifest exactly as pushed, under the tag and under its digest.
    assert raw_manifest(skopeo, repo, "v1") == image.manifest.data
    assert raw_manifest(skopeo, repo, image.manifest.digest) == image.manifest.data
    info = json.loads(skopeo.on_registry("inspect", skopeo.ref(repo, "v1")).stdout)
    assert info["Digest"] == image.manifest.digest
    assert info["Layers"] == [layer.digest for layer in image.layers]
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    body, media_type, digest = api.manifest_ok(repo, "v1")
    assert (body, media_type, digest) == (image.manifest.data, OCI_MANIFEST, image.manifest.digest)

    # Copied back out (by tag, then by digest), every blob is the one that was pushed.
    for reference, out in (("v1", tmp_path / "out-tag"), (image.manifest.digest, tmp_path / "out-digest")):
        skopeo.copy(skopeo.ref(repo, reference), f"oci:{out}:copied")
        root = layout_root(out, "copied")
        assert root["digest"] == image.manifest.digest
        assert root["size"] == image.manifest.size
        for blob in image.blobs():
            assert layout_blob(out, blob.digest) == blob.data, f"{blob.media_type} {blob.digest} differs"


def test_copy_multi_arch_index_with_all(skopeo, api, repo, tmp_path):
    amd64, arm64 = Image("amd64"), Image("arm64")
    index = Index([amd64, arm64])
    push(skopeo, tmp_path, index, repo, "v1", "--all")

    assert raw_manifest(skopeo, repo, "v1") == index.manifest.data
    body, media_type, digest = api.manifest_ok(repo, "v1")
    assert (media_type, digest) == (OCI_INDEX, index.manifest.digest)
    for image in (amd64, arm64):
        # Every child manifest and every blob of every platform was pushed.
        assert raw_manifest(skopeo, repo, image.manifest.digest) == image.manifest.data
        for blob in (image.config, *image.layers):
            assert api.blob(repo, blob.digest) == blob.data

    # Reading the tag for one platform resolves the index to that platform's image.
    for image in (amd64, arm64):
        config = skopeo(
            "--override-arch", image.architecture, "inspect", *skopeo.registry_flags(), "--config", "--raw",
            skopeo.ref(repo, "v1"), binary=True,
        ).stdout
        assert config == image.config.data
    single = tmp_path / "out-arm64"
    skopeo("--override-arch", "arm64", "copy", *skopeo.registry_flags("src-"), skopeo.ref(repo, "v1"),
           f"oci:{single}:arm64")
    assert layout_root(single, "arm64")["digest"] == arm64.manifest.digest

    # Copied back out with --all, the index and everything under it is byte-identical.
    out = tmp_path / "out-all"
    skopeo.copy(skopeo.ref(repo, "v1"), f"oci:{out}:copied", "--all")
    assert layout_root(out, "copied")["digest"] == index.manifest.digest
    for blob in index.blobs():
        assert layout_blob(out, blob.digest) == blob.data, f"{blob.media_type} {blob.digest} differs"


def test_copy_between_repositories(skopeo, api, repo, tmp_path):
    image = Image(layer_tars=[random_tar(), random_tar()])
    push(skopeo, tmp_path, image, repo, "v1")
    target = f"{repo}-copy"
    for blob in image.blobs()[1:]:
        assert not api.blob_exists(target, blob.digest), "a blob of another repository is visible in a new one"

    copied = skopeo("--debug", "copy", *skopeo.registry_flags("src-"), *skopeo.registry_flags("dest-"),
                    skopeo.ref(repo, "v1"), skopeo.ref(target, "v2"))

    # skopeo remembers from the push which repository holds these layers and asks the registry to
    # mount them from there (POST /v2/<target>/blobs/uploads/?mount=<digest>&from=<repo>) instead
    # of uploading them again. The target had none of them (checked above), so a layer skopeo
    # skips as "already present" is one the registry mounted.
    log = copied.stderr
    assert "Trying to mount" in log and "mount OK" in log, f"no cross-repository mount succeeded:\n{log[-4000:]}"
    for layer in image.layers:
        assert f"Skipping blob {layer.digest} (already present)" in log, (
            f"layer {layer.digest} was uploaded again instead of mounted from {repo}:\n{log[-4000:]}"
        )

    assert raw_manifest(skopeo, target, "v2") == image.manifest.data
    for blob in (image.config, *image.layers):
        assert api.blob(target, blob.digest) == blob.data
        assert api.blob(repo, blob.digest) == blob.data
    assert api.tags(target) == ["v2"]
    assert api.tags(repo) == ["v1"]


def test_delete(skopeo, api, repo, tmp_path):
    doomed, kept = Image(), Image()
    push(skopeo, tmp_path, doomed, repo, "v1")
    skopeo.copy(skopeo.ref(repo, "v1"), skopeo.ref(repo, "v1-alias"))
    push(skopeo, tmp_path, kept, repo, "keep")
    assert api.manifest_digest(repo, "v1-alias") == doomed.manifest.digest

    skopeo.on_registry("delete", skopeo.ref(repo, "v1"))

    # skopeo deletes by digest: the manifest and every tag that pointed at it are gone.
    assert api.manifest(repo, doomed.manifest.digest).status_code == 404
    assert api.manifest_digest(repo, "v1") is None
    assert api.manifest_digest(repo, "v1-alias") is None
    gone = skopeo.on_registry("inspect", "--raw", skopeo.ref(repo, "v1"), check=False)
    assert gone.returncode != 0
    assert api.tags(repo) == ["keep"]
    # The other image of the repository is untouched.
    assert raw_manifest(skopeo, repo, "keep") == kept.manifest.data
    for blob in (kept.config, *kept.layers):
        assert api.blob(repo, blob.digest) == blob.data


def test_list_tags(skopeo, api, repo, tmp_path):
    image = Image()
    push(skopeo, tmp_path, image, repo, "v1")
    tags = ["v1", "1.0.0", "latest", "RC_2", "v1.0-rc.1"]
    for tag in tags[1:]:
        skopeo.copy(skopeo.ref(repo, "v1"), skopeo.ref(repo, tag))

    listed = json.loads(skopeo.on_registry("list-tags", skopeo.ref(repo)).stdout)
    assert listed["Repository"] == f"{skopeo.registry.host}/{repo}"
    assert sorted(listed["Tags"]) == sorted(tags)
    assert sorted(api.tags(repo)) == sorted(tags)
    for tag in tags:
        assert api.manifest_digest(repo, tag) == image.manifest.digest

    missing = skopeo.on_registry("list-tags", skopeo.ref(f"{repo}-missing"), check=False)
    assert missing.returncode != 0
