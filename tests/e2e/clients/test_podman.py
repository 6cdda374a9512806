"""podman (vfs storage in a temporary root) against the registry: push, pull and manifest lists."""

from __future__ import annotations

import json
import os
import uuid

from .images import DOCKER_LIST, OCI_INDEX


def build(podman, tmp_path, tag: str, platform: str = "linux/amd64") -> tuple[str, bytes]:
    """Build a FROM scratch image with a random file; returns (image id, file bytes)."""
    context = tmp_path / f"context-{platform.replace('/', '-')}"
    context.mkdir()
    payload = os.urandom(5000)
    (context / "payload.bin").write_bytes(payload)
    (context / "Containerfile").write_text(
        f"FROM scratch\nLABEL berth.e2e.run={uuid.uuid4().hex}\nCOPY payload.bin /payload.bin\n"
    )
    podman("build", "--no-cache", "--platform", platform, "--tag", tag, str(context))
    return image_field(podman, tag, "{{.Id}}"), payload


def image_field(podman, ref: str, template: str) -> str:
    return podman("image", "inspect", "--format", template, ref).stdout.strip()


def test_push_and_pull(podman, api, registry, repo, tmp_path):
    ref = f"{registry.host}/{repo}:v1"
    built_id, payload = build(podman, tmp_path, ref)

    digest_file = tmp_path / "pushed.digest"
    podman("push", "--digestfile", str(digest_file), ref)
    digest = digest_file.read_text().strip()

    body, _, served_digest = api.manifest_ok(repo, "v1")
    assert served_digest == digest
    manifest = json.loads(body)
    # containers/storage names an image by the digest of its config.
    assert manifest["config"]["digest"] == f"sha256:{built_id}"
    assert len(manifest["layers"]) == 1
    for descriptor in (manifest["config"], *manifest["layers"]):
        assert len(api.blob(repo, descriptor["digest"])) == descriptor["size"]

    podman("rmi", ref)
    assert podman("image", "exists", ref, check=False).returncode == 1

    podman("pull", ref)
    assert image_field(podman, ref, "{{.Id}}") == built_id
    assert image_field(podman, ref, "{{.Digest}}") == digest

    # The file comes back out of the pulled image unchanged.
    container = podman("create", ref, "/payload.bin").stdout.strip()
    try:
        out = tmp_path / "payload.out"
        podman("cp", f"{container}:/payload.bin", str(out))
    finally:
        podman("rm", container)
    assert out.read_bytes() == payload


def test_manifest_push_all(podman, api, registry, repo, tmp_path):
    local = f"localhost/{repo}"
    built = {}
    for arch in ("amd64", "arm64"):
        built[arch], _ = build(podman, tmp_path, f"{local}:{arch}", platform=f"linux/{arch}")
        assert image_field(podman, f"{local}:{arch}", "{{.Architecture}}") == arch
    assert built["amd64"] != built["arm64"]

    manifest_list = f"{local}-list:latest"
    podman("manifest", "create", manifest_list)
    for arch in ("amd64", "arm64"):
        podman("manifest", "add", manifest_list, f"containers-storage:{local}:{arch}")
    digest_file = tmp_path / "list.digest"
    podman("manifest", "push", "--all", "--digestfile", str(digest_file), manifest_list,
           f"docker://{registry.host}/{repo}:v1")

    # The registry has the index under the tag, listing both platforms...
    index, digest = api.index(repo, "v1")
    assert digest == digest_file.read_text().strip()
    assert index["mediaType"] in (OCI_INDEX, DOCKER_LIST)
    children = index["manifests"]
    assert sorted(child["platform"]["architecture"] for child in children) == ["amd64", "arm64"]
    assert all(child["platform"]["os"] == "linux" for child in children)

    # ...and every child manifest, with its config and layers, is there too.
    for child in children:
        body, media_type, child_digest = api.manifest_ok(repo, child["digest"])
        assert child_digest == child["digest"]
        assert len(body) == child["size"]
        assert media_type == child["mediaType"]
        manifest = json.loads(body)
        arch = child["platform"]["architecture"]
        assert manifest["config"]["digest"] == f"sha256:{built[arch]}"
        config = json.loads(api.blob(repo, manifest["config"]["digest"]))
        assert (config["architecture"], config["os"]) == (arch, "linux")
        for layer in manifest["layers"]:
            assert len(api.blob(repo, layer["digest"])) == layer["size"]
