"""oras-py against the registry: artifacts with an artifactType, referrers, and the referrers API.

oras-py's push() has no artifactType argument, so the artifact's manifest is written here and
sent with the client's own upload_blob / upload_manifest (the client still does the uploads and
the authentication). One referrer is a hand-written manifest PUT by digest; the other is made by
oras-py's push(subject=...), whose artifact type is then its config's media type.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .images import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, sha256

ARTIFACT_TYPE = "application/vnd.berth.test.artifact.v1"
SIGNATURE_TYPE = "application/vnd.berth.test.signature.v1"
SBOM_TYPE = "application/vnd.berth.test.sbom.v1+json"
TITLE = "org.opencontainers.image.title"
EMPTY_CONFIG = b"{}"


def upload_file(client, container, path: Path, media_type: str, title: str | None = None) -> dict:
    data = path.read_bytes()
    descriptor = {"mediaType": media_type, "digest": sha256(data), "size": len(data)}
    if title:
        descriptor["annotations"] = {TITLE: title}
    response = client.upload_blob(str(path), container, descriptor)
    assert response.status_code in (200, 201), f"blob upload: {response.status_code} {response.text[:300]}"
    return descriptor


def empty_config(client, container, tmp_path: Path) -> dict:
    path = tmp_path / "empty-config.json"
    path.write_bytes(EMPTY_CONFIG)
    return upload_file(client, container, path, OCI_EMPTY)


def push_artifact(client, registry, repo: str, tmp_path: Path, tag: str = "v1") -> tuple[dict, str, bytes]:
    """An artifact manifest with artifactType, pushed under `tag`: (manifest, digest, payload)."""
    container = client.get_container(f"{registry.host}/{repo}:{tag}")
    payload = os.urandom(3000)
    path = tmp_path / "artifact.bin"
    path.write_bytes(payload)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": empty_config(client, container, tmp_path),
        "layers": [upload_file(client, container, path, "application/vnd.berth.test.payload", "artifact.bin")],
        "annotations": {"org.opencontainers.image.description": "berth e2e artifact"},
    }
    response = client.upload_manifest(manifest, container)
    assert response.status_code == 201, f"manifest PUT: {response.status_code} {response.text[:300]}"
    return manifest, response.headers["Docker-Content-Digest"], payload


def put_manifest_by_digest(client, registry, repo: str, manifest: dict) -> tuple[str, bytes]:
    body = json.dumps(manifest, separators=(",", ":")).encode()
    digest = sha256(body)
    url = f"{client.prefix}://{registry.host}/v2/{repo}/manifests/{digest}"
    response = client.do_request(url, "PUT", data=body, headers={"Content-Type": OCI_MANIFEST})
    assert response.status_code == 201, f"manifest PUT by digest: {response.status_code} {response.text[:300]}"
    assert response.headers.get("Docker-Content-Digest") == digest
    return digest, body


def test_push_and_pull_artifact_with_artifact_type(oras_client, api, registry, repo, tmp_path):
    manifest, digest, payload = push_artifact(oras_client, registry, repo, tmp_path)

    # The registry stored the manifest as sent: artifactType included, digest of those bytes.
    body, media_type, served_digest = api.manifest_ok(repo, "v1", accept=OCI_MANIFEST)
    assert (media_type, served_digest) == (OCI_MANIFEST, digest)
    assert json.loads(body) == manifest
    assert json.loads(body)["artifactType"] == ARTIFACT_TYPE

    # oras-py reads the manifest back the same way.
    fetched = oras_client.get_manifest(f"{registry.host}/{repo}:v1")
    assert fetched == manifest

    # Pulled back by tag and by digest, the file is byte-identical.
    for n, target in enumerate((f"{registry.host}/{repo}:v1", f"{registry.host}/{repo}@{digest}")):
        outdir = tmp_path / f"pulled-{n}"
        files = oras_client.pull(target=target, outdir=str(outdir))
        assert [Path(f).name for f in files] == ["artifact.bin"]
        assert Path(files[0]).read_bytes() == payload
    assert api.blob(repo, manifest["config"]["digest"]) == EMPTY_CONFIG
    assert oras_client.get_tags(f"{registry.host}/{repo}") == ["v1"]


def test_referrers(oras_client, api, registry, repo, tmp_path):
    subject_manifest, subject_digest, _ = push_artifact(oras_client, registry, repo, tmp_path)
    subject_body, _, _ = api.manifest_ok(repo, subject_digest)
    subject = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject_body)}
    container = oras_client.get_container(f"{registry.host}/{repo}:v1")

    # Referrer 1: a signature-like manifest written by hand, with artifactType, pushed by digest.
    signature = tmp_path / "signature.bin"
    signature.write_bytes(os.urandom(256))
    signature_annotations = {"org.opencontainers.image.description": "berth e2e signature"}
    signature_digest, signature_body = put_manifest_by_digest(oras_client, registry, repo, {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SIGNATURE_TYPE,
        "config": empty_config(oras_client, container, tmp_path),
        "layers": [upload_file(oras_client, container, signature, "application/vnd.berth.test.sig", "signature.bin")],
        "subject": subject,
        "annotations": signature_annotations,
    })

    # Referrer 2: oras-py's own push(subject=...); with no artifactType its type is the config's.
    import oras.oci

    sbom = tmp_path / "sbom.json"
    sbom.write_text(json.dumps({"packages": [os.urandom(8).hex()]}))
    sbom_config = tmp_path / "sbom-config.json"
    sbom_config.write_text("{}")
    response = oras_client.push(
        target=f"{registry.host}/{repo}:sbom",
        files=[str(sbom)],
        manifest_config=f"{sbom_config}:{SBOM_TYPE}",
        subject=oras.oci.Subject(**subject),
        disable_path_validation=True,
        quiet=True,
    )
    assert response.status_code == 201
    sbom_digest = response.headers["Docker-Content-Digest"]
    sbom_body, _, _ = api.manifest_ok(repo, sbom_digest)
    assert json.loads(sbom_body)["subject"] == subject

    # GET /v2/<repo>/referrers/<subject digest> lists both, as descriptors of an image index.
    response = api.referrers(repo, subject_digest)
    assert response.status_code == 200, f"referrers: {response.status_code} {response.text[:300]}"
    assert response.headers["Content-Type"].split(";")[0] == OCI_INDEX
    index = response.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    listed = {d["digest"]: d for d in index["manifests"]}
    assert set(listed) == {signature_digest, sbom_digest}
    assert listed[signature_digest]["mediaType"] == OCI_MANIFEST
    assert listed[signature_digest]["size"] == len(signature_body)
    assert listed[signature_digest]["artifactType"] == SIGNATURE_TYPE
    assert listed[signature_digest].get("annotations") == signature_annotations
    assert listed[sbom_digest]["size"] == len(sbom_body)
    assert listed[sbom_digest]["artifactType"] == SBOM_TYPE

    # ?artifactType= filters, and the registry says it did.
    response = api.referrers(repo, subject_digest, artifact_type=SIGNATURE_TYPE)
    assert response.status_code == 200
    assert response.headers.get("OCI-Filters-Applied") == "artifactType"
    assert [d["digest"] for d in response.json()["manifests"]] == [signature_digest]
    response = api.referrers(repo, subject_digest, artifact_type="application/vnd.berth.test.nothing")
    assert response.status_code == 200
    assert response.json()["manifests"] == []

    # A manifest nobody refers to has an empty list, not an error.
    response = api.referrers(repo, signature_digest)
    assert response.status_code == 200
    assert response.json()["manifests"] == []

    # The referrer itself pulls back like any artifact.
    files = oras_client.pull(target=f"{registry.host}/{repo}@{signature_digest}", outdir=str(tmp_path / "sig"))
    assert [Path(f).read_bytes() for f in files] == [signature.read_bytes()]
    assert hashlib.sha256(api.manifest_ok(repo, signature_digest)[0]).hexdigest() == signature_digest.split(":")[1]
