"""Test data and small helpers for the OCI Distribution Spec conformance port.

Ports conformance/setup.go and conformance/image.go of opencontainers/distribution-spec
(setup.go at commit b5f09ebe541c65857e8721d51a7a3d0e2f1d8749, image.go at commit
3ec8a56d897bb89d482b41d4aac6ba01519f55f2; the Ginkgo v2 suite that ships with spec v1.1).

Every test module builds its own `TestData` (fresh random config authors and blobs) and uses its
own repository name, so the four workflows never see each other's content. Upstream shares one
OCI_NAMESPACE between the workflows; the per-workflow data indexes (configs[0] for pull,
configs[1] for push, configs[2] and configs[4] for discovery, configs[3] for management) are kept
so the specs read the same as upstream.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_EMPTY = "application/vnd.oci.empty.v1+json"
MT_LAYER_TGZ = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCTET = "application/octet-stream"

EMPTY_LAYER_TEST_TAG = "emptylayer"
TEST_TAG_NAME = "tagtest0"
NONEXISTENT_MANIFEST = ".INVALID_MANIFEST_NAME"
INVALID_MANIFEST_CONTENT = b"blablabla"
ARTIFACT_TYPE_FILTER = "artifactType"

# setup.go errorCodes, in the same order as the Go constants.
ERROR_CODES = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "MANIFEST_UNVERIFIED",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "TAG_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
]

# layerBase64String from setup.go: a tiny tar.gz holding test.txt.
LAYER_BASE64 = (
    "H4sIAAAAAAAAA+3OQQrCMBCF4a49xXgBSUnaHMCTRBptQRNpp6i3t0UEV7oqIv7fYgbmzeJpHHSjVy0"
    "WZCa1c/MufWVe94N3RWlrZ72x3k/30nhbFWKWLPU0Dhp6keJ8im//PuU/6pZH2WVtYx8b0Sz7LjWSR5VLG6YRBumSzOlGtjkd+qD"
    "jMWiX07Befbs7AAAAAAAAAAAAAAAAAPyzO34MnqoAKAAA"
)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512_digest(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def go_json(obj) -> bytes:
    """json.MarshalIndent(obj, "", "\\t") equivalent (field order is kept by the dicts)."""
    return json.dumps(obj, indent="\t").encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def descriptor(
    media_type: str,
    digest: str,
    size: int,
    *,
    annotations: dict | None = None,
    data: bytes | None = None,
    artifact_type: str | None = None,
    new_unspecified_field: bytes | None = None,
) -> dict:
    """image.go `descriptor`, marshalled the way encoding/json does it.

    `newUnspecifiedField` has no omitempty upstream, so it is always present (null when unset);
    it exercises the registry's handling of fields unknown to image-spec.
    """
    d: dict = {"mediaType": media_type, "digest": digest, "size": size}
    if annotations:
        d["annotations"] = annotations
    if data:
        d["data"] = b64(data)
    if artifact_type:
        d["artifactType"] = artifact_type
    d["newUnspecifiedField"] = b64(new_unspecified_field) if new_unspecified_field else None
    return d


def manifest_doc(config: dict, layers: list, *, media_type=MT_MANIFEST, artifact_type=None,
                 subject=None, annotations=None) -> dict:
    m: dict = {"schemaVersion": 2}
    if media_type:
        m["mediaType"] = media_type
    if artifact_type:
        m["artifactType"] = artifact_type
    m["config"] = config
    m["layers"] = layers
    if subject:
        m["subject"] = subject
    if annotations:
        m["annotations"] = annotations
    return m


def random_string(n: int) -> str:
    letters = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-"
    return "".join(secrets.choice(letters) for _ in range(n))


@dataclass
class Blob:
    content: bytes
    digest: str

    @property
    def length(self) -> str:
        return str(len(self.content))


class TestData:
    """Everything setup.go's init() computes."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        # Upstream loops `numWorkflows` times (the constant after the four workflow bits, 1<<4);
        # only indexes 0..4 are ever used, so five are made here.
        self.configs: list[Blob] = []
        for _ in range(5):
            config = {
                "author": random_string(16),
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []},
            }
            content = go_json(config)
            self.configs.append(Blob(content, sha256_digest(content)))

        self.layer_blob_data = base64.b64decode(LAYER_BASE64)
        self.layer_blob_digest = sha256_digest(self.layer_blob_data)
        self.layer_blob_content_length = str(len(self.layer_blob_data))
        layers = [descriptor(MT_LAYER_TGZ, self.layer_blob_digest, len(self.layer_blob_data))]

        self.manifests: list[Blob] = []
        for cfg in self.configs:
            doc = manifest_doc(
                descriptor(MT_CONFIG, cfg.digest, len(cfg.content), data=cfg.content,
                           new_unspecified_field=b"hello world"),
                layers,
            )
            content = go_json(doc)
            self.manifests.append(Blob(content, sha256_digest(content)))

        # used in the push test: no mediaType, no layers, config = configs[1]
        cfg1 = self.configs[1]
        empty_layer = manifest_doc(
            descriptor(MT_CONFIG, cfg1.digest, len(cfg1.content), data=cfg1.content,
                       new_unspecified_field=b"hello world"),
            [],
            media_type=None,
        )
        self.empty_layer_manifest_content = go_json(empty_layer)
        self.empty_layer_manifest_digest = sha256_digest(self.empty_layer_manifest_content)

        # randomBlob(42, ...) for the streamed/monolithic/mount tests
        self.test_blob_a = secrets.token_bytes(42)
        self.test_blob_a_digest = sha256_digest(self.test_blob_a)
        self.test_blob_a_length = str(len(self.test_blob_a))
        self.setup_chunked_blob(42)

        # referrers
        self.empty_json_blob = b"{}"
        self.empty_json_descriptor = descriptor(MT_EMPTY, sha256_digest(b"{}"), 2)

        self.test_ref_blob_a = b"NHL Peanut Butter on my NHL bagel"
        self.test_ref_blob_a_digest = sha256_digest(self.test_ref_blob_a)
        self.test_ref_artifact_type_a = "application/vnd.nhl.peanut.butter.bagel"
        self.test_ref_blob_b = b"NBA Strawberry Jam on my NBA croissant"
        self.test_ref_blob_b_digest = sha256_digest(self.test_ref_blob_b)
        self.test_ref_artifact_type_b = "application/vnd.nba.strawberry.jam.croissant"
        self.test_ref_artifact_type_index = "application/vnd.food.stand"
        self.test_annotation_key = "org.opencontainers.conformance.test"
        self.test_annotation_values: dict[str, str] = {}

        m4, m3 = self.manifests[4], self.manifests[3]
        subject4 = descriptor(MT_MANIFEST, m4.digest, len(m4.content))
        subject3 = descriptor(MT_MANIFEST, m3.digest, len(m3.content))

        def add(doc: dict) -> tuple[bytes, str]:
            content = go_json(doc)
            dig = sha256_digest(content)
            if doc.get("annotations"):
                self.test_annotation_values[dig] = doc["annotations"][self.test_annotation_key]
            return content, dig

        # artifact with subject, config.mediaType = artifactType
        self.refs_manifest_a_config_artifact_content, self.refs_manifest_a_config_artifact_digest = add(
            manifest_doc(
                descriptor(self.test_ref_artifact_type_a, self.test_ref_blob_a_digest, len(self.test_ref_blob_a)),
                [self.empty_json_descriptor],
                subject=subject4,
                annotations={self.test_annotation_key: "test config a"},
            )
        )
        self.refs_manifest_b_config_artifact_content, self.refs_manifest_b_config_artifact_digest = add(
            manifest_doc(
                descriptor(self.test_ref_artifact_type_b, self.test_ref_blob_b_digest, len(self.test_ref_blob_b)),
                [self.empty_json_descriptor],
                subject=subject4,
                annotations={self.test_annotation_key: "test config b"},
            )
        )
        # artifact with subject, artifactType set, config = empty JSON
        self.refs_manifest_a_layer_artifact_content, self.refs_manifest_a_layer_artifact_digest = add(
            manifest_doc(
                self.empty_json_descriptor,
                [descriptor(self.test_ref_artifact_type_a, self.test_ref_blob_a_digest, len(self.test_ref_blob_a))],
                artifact_type=self.test_ref_artifact_type_a,
                subject=subject4,
                annotations={self.test_annotation_key: "test layer a"},
            )
        )
        self.refs_manifest_b_layer_artifact_content, self.refs_manifest_b_layer_artifact_digest = add(
            manifest_doc(
                self.empty_json_descriptor,
                [descriptor(self.test_ref_artifact_type_b, self.test_ref_blob_b_digest, len(self.test_ref_blob_b))],
                artifact_type=self.test_ref_artifact_type_b,
                subject=subject4,
                annotations={self.test_annotation_key: "test layer b"},
            )
        )
        # same as B layer artifact, but its subject (manifests[3]) is never pushed here
        self.refs_manifest_c_layer_artifact_content, self.refs_manifest_c_layer_artifact_digest = add(
            manifest_doc(
                self.empty_json_descriptor,
                [descriptor(self.test_ref_artifact_type_b, self.test_ref_blob_b_digest, len(self.test_ref_blob_b))],
                artifact_type=self.test_ref_artifact_type_b,
                subject=subject3,
            )
        )
        # index with subject
        index_doc = {
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "artifactType": self.test_ref_artifact_type_index,
            "manifests": [
                descriptor(MT_MANIFEST, self.refs_manifest_a_config_artifact_digest,
                           len(self.refs_manifest_a_config_artifact_content)),
                descriptor(MT_MANIFEST, self.refs_manifest_a_layer_artifact_digest,
                           len(self.refs_manifest_a_layer_artifact_content)),
            ],
            "subject": subject4,
            "annotations": {self.test_annotation_key: "test index"},
        }
        self.refs_index_artifact_content, self.refs_index_artifact_digest = add(index_doc)

        self.dummy_digest = sha256_digest(b"hello world")

    def setup_chunked_blob(self, size: int) -> None:
        """setupChunkedBlob: a random blob split after size/2+1 bytes."""
        self.test_blob_b = secrets.token_bytes(size)
        self.test_blob_b_digest = sha256_digest(self.test_blob_b)
        cut = size // 2 + 1
        self.test_blob_b_chunk1 = self.test_blob_b[:cut]
        self.test_blob_b_chunk1_length = str(len(self.test_blob_b_chunk1))
        self.test_blob_b_chunk1_range = f"0-{len(self.test_blob_b_chunk1) - 1}"
        self.test_blob_b_chunk2 = self.test_blob_b[cut:]
        self.test_blob_b_chunk2_length = str(len(self.test_blob_b_chunk2))
        self.test_blob_b_chunk2_range = f"{len(self.test_blob_b_chunk1)}-{len(self.test_blob_b) - 1}"


def new_namespace(label: str) -> str:
    """A fresh repository name, `conformance/<uuid>-<label>`."""
    return f"conformance/{uuid.uuid4().hex}-{label}"


def relative_location(resp: requests.Response) -> str:
    """reggie's GetRelativeLocation: path and query of the Location header ('' when absent)."""
    loc = resp.headers.get("Location", "")
    if not loc:
        return ""
    parts = urlsplit(loc)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def describe(resp: requests.Response) -> str:
    req = resp.request
    body = resp.content[:600] if resp.request.method != "HEAD" else b""
    headers = {k: v for k, v in resp.headers.items()
               if k.lower() in ("location", "range", "content-type", "docker-content-digest",
                                "oci-subject", "oci-filters-applied", "www-authenticate",
                                "oci-chunk-min-length", "content-length")}
    return f"{req.method} {req.url} -> {resp.status_code} {headers} {body!r}"


def expect_status(resp: requests.Response, *allowed: int) -> None:
    assert resp.status_code in allowed, f"expected status in {allowed}; {describe(resp)}"


def expect_2xx(resp: requests.Response, *also: int) -> None:
    """SatisfyAll(>=200, <300), optionally SatisfyAny with extra exact codes."""
    ok = 200 <= resp.status_code < 300 or resp.status_code in also
    extra = f" or {also}" if also else ""
    assert ok, f"expected 2xx{extra}; {describe(resp)}"


def error_codes_of(resp: requests.Response) -> list[str]:
    """reggie's resp.Errors(): the `code` of each entry of the JSON `errors` array."""
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON; {describe(resp)}")
    assert isinstance(body, dict) and isinstance(body.get("errors"), list), \
        f"error body has no `errors` array; {describe(resp)}"
    return [e.get("code") for e in body["errors"] if isinstance(e, dict)]


def tag_list(resp: requests.Response) -> list[str]:
    """getTagList: the `tags` array, or [] when the body does not parse."""
    try:
        body = resp.json()
    except ValueError:
        return []
    tags = body.get("tags") if isinstance(body, dict) else None
    return tags if isinstance(tags, list) else []
