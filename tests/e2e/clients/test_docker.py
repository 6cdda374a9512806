"""The docker CLI and dockerd (classic builder, DOCKER_BUILDKIT=0) against the registry."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import uuid

from .images import DOCKER_MANIFEST


def image_id(dockerd, ref: str) -> str:
    return dockerd("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def test_build_push_rmi_pull_and_manifest_inspect(dockerd, api, registry, repo, tmp_path):
    context = tmp_path / "context"
    context.mkdir()
    payload = os.urandom(6000)
    (context / "payload.bin").write_bytes(payload)
    (context / "Dockerfile").write_text(
        "FROM scratch\n"
        f"LABEL berth.e2e.run={uuid.uuid4().hex}\n"
        "COPY payload.bin /payload.bin\n"
        'CMD ["/payload.bin"]\n'
    )
    ref = f"{registry.host}/{repo}:v1"

    dockerd("build", "--tag", ref, str(context))
    built_id = image_id(dockerd, ref)

    pushed = dockerd("push", ref).stdout
    match = re.search(r"v1: digest: (sha256:[0-9a-f]{64}) size: (\d+)", pushed)
    assert match, pushed
    digest, size = match.group(1), int(match.group(2))

    # The registry serves what docker pushed: a schema 2 manifest whose config is the image.
    body, media_type, served_digest = api.manifest_ok(repo, "v1")
    assert (media_type, served_digest, len(body)) == (DOCKER_MANIFEST, digest, size)
    manifest = json.loads(body)
    assert manifest["config"]["digest"] == built_id
    assert len(manifest["layers"]) == 1
    for descriptor in (manifest["config"], *manifest["layers"]):
        assert len(api.blob(repo, descriptor["digest"])) == descriptor["size"]

    dockerd("rmi", ref)
    assert dockerd("image", "inspect", ref, check=False).returncode != 0
    assert dockerd("image", "inspect", built_id, check=False).returncode != 0, "rmi left the image behind"

    pulled = dockerd("pull", ref).stdout
    assert f"Digest: {digest}" in pulled, pulled
    assert image_id(dockerd, ref) == built_id
    repo_digests = json.loads(dockerd("image", "inspect", "--format", "{{json .RepoDigests}}", ref).stdout)
    assert f"{registry.host}/{repo}@{digest}" in repo_digests

    # The file that was COPY'd in comes back out of the pulled image unchanged.
    container = dockerd("create", "--network", "none", ref).stdout.strip()
    try:
        archive = dockerd("cp", f"{container}:/payload.bin", "-", binary=True).stdout
    finally:
        dockerd("rm", container)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert tar.extractfile("payload.bin").read() == payload

    # Pulling by digest gives the same image.
    dockerd("pull", f"{registry.host}/{repo}@{digest}")
    assert image_id(dockerd, f"{registry.host}/{repo}@{digest}") == built_id

    # `docker manifest inspect` (the CLI's own registry client) sees the same manifest.
    for reference in (ref, f"{registry.host}/{repo}@{digest}"):
        inspected = json.loads(dockerd("manifest", "inspect", "--insecure", reference).stdout)
        assert inspected["mediaType"] == DOCKER_MANIFEST
        assert inspected["config"] == manifest["config"]
        assert inspected["layers"] == manifest["layers"]
    verbose = json.loads(dockerd("manifest", "inspect", "--insecure", "--verbose", ref).stdout)
    assert verbose["Descriptor"]["digest"] == digest
    assert verbose["Descriptor"]["size"] == size
