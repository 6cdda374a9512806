"""Test data and request helpers for the ports of the conformance runner on distribution-spec's
main branch (tests/e2e/conformance/test_spec_main_*.py).

On its main branch, opencontainers/distribution-spec replaced the Ginkgo suite (ported in the
other modules here) with a runner (conformance/run.go) that generates data sets and runs the
same chain of child tests on each: push, tag-list, head, pull, referrers, delete. This module
ports what those tests need:

- the data generators of conformance/testdata.go at commit
  216c04cd22cedaab8cff577692d90e6ff7a1af0b (`DataSet`: gen_blob, gen_layer, gen_config,
  gen_manifest, gen_manifest_full, gen_index, gen_index_full) and the data sets that
  conformance/run.go at commit 4fc4ecbefaaa6e4e1682f59f5ac445d076cf642d builds from them in
  GenerateData (`sparse_data_set`, `tag_param_data_set`);
- the request and response checks of conformance/api.go at commit
  216c04cd22cedaab8cff577692d90e6ff7a1af0b (ManifestPut, ManifestHeadExists, ManifestGetExists,
  ManifestDelete, TagList, BlobPostPut, VerifyDigest).

The configuration is the one these ports are meant for: OCI_VERSION=dev (so
`apis.manifests.digestHeader` and `apis.blobs.digestHeader` are on, which makes every HEAD and
GET of a manifest require a Docker-Content-Digest header equal to the digest asked for, and
`apis.manifests.tagParam` is on) with OCI_DATA_SPARSE=true; every other switch keeps its
default (referrers, deletes and their "atomic" checks on).

Upstream collects every problem of one child test (errors.Join) before reporting it; the helpers
here do the same: they return a list of problems, and `assert_no_problems` fails the test with
all of them.

Differences that do not change what is sent or checked:
- Go sends the two Accept values of a manifest request as two header lines; requests sends one
  line with both values (the same field value under RFC 9110, section 5.3).
- Go's map iteration is random (which tags go with which push, which layer the sparse data set
  drops); here the order is that of insertion, except for the dropped layer, which is chosen at
  random as upstream.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import secrets
import tarfile
from dataclasses import dataclass, field
from urllib.parse import urljoin

import requests

from .conformance_support import describe

MT_OCTET = "application/octet-stream"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_IMAGE = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_PRE = "application/vnd.oci.image.layer.v1."
MT_OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"

# ManifestGetReq and ManifestHeadReq add these two Accept values, in this order.
ACCEPT_MANIFESTS = {"Accept": f"{MT_OCI_INDEX}, {MT_OCI_IMAGE}"}

AMD64 = {"architecture": "amd64", "os": "linux"}  # image.Platform, in encoding/json field order
ARM64 = {"architecture": "arm64", "os": "linux"}

MAX_INT64 = 2**63 - 1


def digest_of(algo: str, data: bytes) -> str:
    """go-digest's Algorithm.FromBytes for sha256 and sha512."""
    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


def go_marshal(obj) -> bytes:
    """encoding/json.Marshal: compact, keys in the order given, UTF-8 as is. (Go would also
    escape <, > and &; no generated document contains them.)"""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def descriptor(media_type: str, digest: str, size: int) -> dict:
    """image.Descriptor with only mediaType, digest and size set (the omitempty fields left out)."""
    return {"mediaType": media_type, "digest": digest, "size": size}


@dataclass
class DataSet:
    """testData: one data set of the runner, with everything its tests push and expect."""

    name: str
    tags: dict[str, str] = field(default_factory=dict)  # tag -> manifest digest
    tag_pushed: dict[str, bool] = field(default_factory=dict)  # set by the push tests
    desc: dict[str, dict] = field(default_factory=dict)  # digest -> descriptor
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, bytes] = field(default_factory=dict)
    man_order: list[str] = field(default_factory=list)  # manifests in push order
    tag_param: set[str] = field(default_factory=set)  # digests pushed with `tag` parameters

    def add_blob(self, data: bytes, algo: str = "sha256", media_type: str = MT_OCTET) -> str:
        dig = digest_of(algo, data)
        self.blobs[dig] = data
        self.desc[dig] = descriptor(media_type, dig, len(data))
        return dig

    def gen_blob(self, size: int = 2048, algo: str = "sha256") -> tuple[str, bytes]:
        data = os.urandom(size)
        return self.add_blob(data, algo), data

    def gen_layer(self, file_num: int, algo: str = "sha256") -> tuple[str, str]:
        """genLayer with gzip: a tar.gz holding one small text file; returns the compressed and
        the "uncompressed" digest.

        Upstream never writes the uncompressed tar into the buffer it digests (the tar writer
        sits on the gzip writer, which writes to the compressed buffer only), so its uncompressed
        digest, which becomes the config's diff_id, is the digest of empty input. Ported as is:
        registries do not check diff_ids.
        """
        text = (f"Conformance test file contents for file number {file_num}.\n"
                f"Todays lucky number is {secrets.randbelow(MAX_INT64)}\n").encode()
        tar_buf = io.BytesIO()
        with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            info = tarfile.TarInfo(f"./conformance-{file_num}.txt")
            info.size = len(text)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(text))
        body = gzip.compress(tar_buf.getvalue(), mtime=0)
        dig_comp = digest_of(algo, body)
        dig_uncomp = digest_of(algo, b"")
        self.blobs[dig_comp] = body
        self.desc[dig_comp] = descriptor(MT_OCI_LAYER_GZ, dig_comp, len(body))
        self.desc[dig_uncomp] = descriptor(MT_OCI_LAYER, dig_uncomp, 0)
        return dig_comp, dig_uncomp

    def gen_config(self, platform: dict, diff_ids: list[str], algo: str = "sha256") -> str:
        """genConfig: an image.Image with author, platform and rootfs (its empty `config`
        struct is marshalled as {}: omitempty does not drop structs)."""
        config = {"author": "OCI Conformance Test", **platform, "config": {},
                  "rootfs": {"type": "layers", "diff_ids": list(diff_ids)}}
        body = go_marshal(config)
        dig = digest_of(algo, body)
        self.blobs[dig] = body
        self.desc[dig] = descriptor(MT_OCI_CONFIG, dig, len(body))
        return dig

    def gen_manifest(self, config: dict, layers: list[dict], algo: str = "sha256",
                     tag: str = "") -> str:
        manifest = {"schemaVersion": 2, "mediaType": MT_OCI_IMAGE, "config": config,
                    "layers": layers}
        return self._add_manifest(go_marshal(manifest), MT_OCI_IMAGE, algo, tag)

    def gen_manifest_full(self, platform: dict = AMD64, layer_count: int = 2,
                          algo: str = "sha256", tag: str = "") -> str:
        """genManifestFull: `layer_count` layers, a config for `platform`, and the manifest."""
        compressed, uncompressed = [], []
        for n in range(layer_count):
            dig_c, dig_uc = self.gen_layer(n, algo)
            compressed.append(dig_c)
            uncompressed.append(dig_uc)
        config = self.gen_config(platform, uncompressed, algo)
        return self.gen_manifest(dict(self.desc[config]), [dict(self.desc[d]) for d in compressed],
                                 algo, tag)

    def gen_index(self, platforms: list[dict | None], manifests: list[str], algo: str = "sha256",
                  tag: str = "") -> str:
        entries = []
        for platform, dig in zip(platforms, manifests, strict=True):
            entry = dict(self.desc[dig])
            if platform is not None:
                entry["platform"] = dict(platform)
            entries.append(entry)
        index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries}
        return self._add_manifest(go_marshal(index), MT_OCI_INDEX, algo, tag)

    def gen_index_full(self, platforms: tuple[dict, ...] = (AMD64, ARM64), algo: str = "sha256",
                       tag: str = "") -> str:
        """genIndexFull: one full image per platform, then the index of them.

        Upstream hands its options, the tag included, to every image it generates, so the tag
        points at each image in turn and ends on the index, generated last.
        """
        images = [self.gen_manifest_full(platform=p, algo=algo, tag=tag) for p in platforms]
        return self.gen_index(list(platforms), images, algo, tag)

    def _add_manifest(self, body: bytes, media_type: str, algo: str, tag: str) -> str:
        dig = digest_of(algo, body)
        self.manifests[dig] = body
        self.man_order.append(dig)
        self.desc[dig] = descriptor(media_type, dig, len(body))
        if tag:
            self.tags[tag] = dig
        return dig

    def tags_of(self, dig: str) -> list[str]:
        return [tag for tag, d in self.tags.items() if d == dig]


def sparse_data_set() -> DataSet:
    """GenerateData's "sparse" data set ("Sparse Manifests"): an image tagged sparse-image whose
    first layer blob (in upstream's random map order) is never pushed, a complete amd64 image,
    and an index tagged sparse-index listing that image and an arm64 manifest that does not
    exist (a descriptor of 1024 random bytes). man_order: sparse image, amd64 image, index."""
    td = DataSet("sparse")
    td.gen_manifest_full(tag="sparse-image")
    layers = [d for d in td.blobs if td.desc[d]["mediaType"].startswith(MT_OCI_LAYER_PRE)]
    dropped = secrets.choice(layers)
    del td.desc[dropped]
    del td.blobs[dropped]
    image = td.gen_manifest_full(platform=AMD64)
    missing = digest_of("sha256", os.urandom(1024))
    td.desc[missing] = descriptor(MT_OCI_IMAGE, missing, 1024)
    td.gen_index([AMD64, ARM64], [image, missing], tag="sparse-index")
    return td


def tag_param_data_set(algo: str) -> DataSet:
    """GenerateData's "tag-param-<algo>" data set: gen_index_full tagged tag-param-<algo> (the
    index, after the tag passed over both images), then one more tag tag-param-<algo>-<i> for
    each manifest i of man_order (amd64 image, arm64 image, index); every manifest is pushed by
    digest with its tags as `tag` parameters (pushOpts TagParam)."""
    name = f"tag-param-{algo}"
    td = DataSet(name)
    td.gen_index_full(algo=algo, tag=name)
    for i, dig in enumerate(td.man_order):
        td.tags[f"{name}-{i}"] = dig
        td.tag_param.add(dig)
    return td


# --- requests and checks (api.go) -----------------------------------------------------------


def assert_no_problems(problems: list[str], what: str) -> None:
    assert not problems, f"{what}:\n  - " + "\n  - ".join(problems)


def detect_media_type(body: bytes) -> str:
    """detectMediaType: the document's mediaType, the image manifest type when it has none."""
    try:
        doc = json.loads(body)
    except ValueError:
        return MT_OCI_IMAGE
    media_type = doc.get("mediaType") if isinstance(doc, dict) else None
    return media_type if isinstance(media_type, str) else MT_OCI_IMAGE


def detect_subject(body: bytes) -> dict | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    subject = doc.get("subject") if isinstance(doc, dict) else None
    return subject if isinstance(subject, dict) else None


def header_values(resp: requests.Response, name: str) -> list[str]:
    """http.Header.Values: every field line of `name` (urllib3 keeps them apart)."""
    raw = getattr(resp.raw, "headers", None)
    if raw is not None and hasattr(raw, "getlist"):
        return list(raw.getlist(name))
    value = resp.headers.get(name)
    return [] if value is None else [value]


def expect_status(resp: requests.Response, *codes: int) -> list[str]:
    if resp.status_code in codes:
        return []
    return [f"unexpected status code, expected one of {list(codes)}, received {resp.status_code}; "
            f"{describe(resp)}"]


def expect_header(resp: requests.Response, name: str, value: str = "") -> list[str]:
    """apiExpectHeader: present (value ""), or one of its field lines equal to `value`."""
    values = header_values(resp, name)
    if not value:
        return [] if values else [f"missing header {name!r}"]
    if value in values:
        return []
    return [f"header value mismatch for {name!r}, expected {value!r}, received {values!r}"]


def expect_body(resp: requests.Response, body: bytes) -> list[str]:
    if resp.content == body:
        return []
    return [f"body contents mismatch, expected {len(body)} bytes {body[:120]!r}..., "
            f"received {len(resp.content)} bytes {resp.content[:120]!r}..."]


def verify_digest(resp: requests.Response, dig: str, require: bool = True) -> list[str]:
    """VerifyDigest with RequireDigestHeader (on for manifests and blobs under OCI_VERSION=dev)."""
    header = resp.headers.get("Docker-Content-Digest", "")
    if not header:
        return ["registry did not return a Docker-Content-Digest header"] if require else []
    if header != dig:
        return [f"Docker-Content-Digest header value expected {dig!r}, received {header!r}"]
    return []


def blob_post_put(repo, dig: str, body: bytes) -> list[str]:
    """BlobPostPut: POST an upload session, PUT the whole blob with ?digest=, expect 201 and a
    Location; the data sets' blobs are pushed this way before their manifests."""
    resp = repo("POST", "blobs/uploads/")
    problems = expect_status(resp, 202)
    location = resp.headers.get("Location")
    if not location:
        return problems + [f"blob post did not return a location; {describe(resp)}"]
    resp = repo.client.put(urljoin(resp.url, location), params={"digest": dig}, data=body,
                           headers={"Content-Type": MT_OCTET, "Content-Length": str(len(body))})
    problems += expect_status(resp, 201)
    problems += verify_digest(resp, dig)
    if not resp.headers.get("Location"):
        problems.append(f"blob put did not return a location; {describe(resp)}")
    return problems


def push_blobs(repo, td: DataSet) -> None:
    """The data set's blobs, as TestPush pushes them before its manifests (setup, asserted)."""
    for dig, body in td.blobs.items():
        assert_no_problems(blob_post_put(repo, dig, body), f"{td.name}: pushing blob {dig}")


def manifest_put(repo, ref: str, dig: str, td: DataSet, tags: list[str] = ()
                 ) -> tuple[requests.Response, list[str]]:
    """ManifestPut: PUT the manifest to /manifests/<ref> (with one `tag` parameter per tag)
    with its own media type as Content-Type; expect 201, an OCI-Subject header when the
    manifest has a subject (referrers API on), a Docker-Content-Digest equal to `dig` when
    present, and a Location that GETs the same bytes with the same type and length."""
    body = td.manifests[dig]
    media_type = detect_media_type(body)
    params = [("tag", t) for t in tags]
    resp = repo("PUT", f"manifests/{ref}", params=params, data=body,
                headers={"Content-Type": media_type})
    problems = expect_status(resp, 201)
    subject = detect_subject(body)
    if subject is not None:
        problems += expect_header(resp, "OCI-Subject", subject.get("digest", ""))
    header = resp.headers.get("Docker-Content-Digest", "")
    if header and header != dig:
        problems.append(f"Docker-Content-Digest header value expected {dig!r}, received {header!r}")
    location = resp.headers.get("Location", "")
    if not location:
        problems.append(f"manifest put did not return a location; {describe(resp)}")
    else:
        got = repo.client.get(urljoin(resp.url, location), headers=ACCEPT_MANIFESTS)
        check = (expect_status(got, 200) + expect_header(got, "Content-Type", media_type)
                 + expect_header(got, "Content-Length", str(len(body))) + expect_body(got, body))
        problems += [f"failed to verify returned location: {p}" for p in check]
    return resp, problems


def oci_tags(resp: requests.Response) -> set[str]:
    """The tags an OCI-Tag response header confirms: every field line, split at commas."""
    return {part.strip() for line in header_values(resp, "OCI-Tag") for part in line.split(",")}


def manifest_head_exists(repo, ref: str, dig: str, td: DataSet) -> list[str]:
    """ManifestHeadExists: HEAD -> 200, no body, the manifest's media type and length, and the
    digest header (required) equal to `dig`."""
    body = td.manifests[dig]
    resp = repo("HEAD", f"manifests/{ref}", headers=ACCEPT_MANIFESTS)
    return (expect_status(resp, 200) + expect_body(resp, b"")
            + expect_header(resp, "Content-Type", detect_media_type(body))
            + expect_header(resp, "Content-Length", str(len(body))) + verify_digest(resp, dig))


def manifest_get_exists(repo, ref: str, dig: str, td: DataSet) -> list[str]:
    """ManifestGetExists: GET -> 200 with the very bytes pushed, their media type and length,
    and the digest header (required) equal to `dig`."""
    body = td.manifests[dig]
    resp = repo("GET", f"manifests/{ref}", headers=ACCEPT_MANIFESTS)
    return (expect_status(resp, 200) + expect_body(resp, body)
            + expect_header(resp, "Content-Type", detect_media_type(body))
            + expect_header(resp, "Content-Length", str(len(body))) + verify_digest(resp, dig))


def manifest_delete(repo, ref: str) -> tuple[requests.Response, list[str], bool]:
    """ManifestDelete: DELETE -> 202, 404, 400 or 405. Returns (response, problems, unsupported):
    upstream reports 400 and 405 as "registry returned status N" marked unsupported, which its
    runner counts as a skip, not a failure."""
    resp = repo("DELETE", f"manifests/{ref}")
    problems = expect_status(resp, 202, 404, 400, 405)
    return resp, problems, not problems and resp.status_code in (400, 405)


def tag_list(repo, **params) -> tuple[list[str], list[str]]:
    """TagList: GET tags/list -> 200 with a JSON tag list, or 404 (then no tags)."""
    resp = repo("GET", "tags/list", params=params)
    if resp.status_code == 404:
        return [], []
    if resp.status_code != 200:
        return [], ["response did not match any condition: " + expect_status(resp, 200, 404)[0]]
    try:
        body = resp.json()
    except ValueError:
        return [], [f"tag list body is not JSON; {describe(resp)}"]
    tags = body.get("tags") if isinstance(body, dict) else None
    return (tags if isinstance(tags, list) else []), []
