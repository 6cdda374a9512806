"""Berth's scale-out mode, black-box: three nodes on one PostgreSQL database and one S3 prefix
(see conftest.py for how they are started), driven through the HTTP API and skopeo.

- an image pushed through node 1 pulls through nodes 2 and 3, byte for byte, with a token node 1
  issued; blob GETs answer 307 to a presigned S3 URL, blob HEADs answer 200;
- skopeo copies an image out of node 1, inspects it through node 3 and pushes it again through
  node 2;
- one chunked upload goes through all three nodes; a stale PATCH gets 416 on any node;
- a tag moved on one node is seen at once on the others; a manifest deleted on one node stops
  being served by the others (within the LISTEN/NOTIFY delivery latency);
- kill -9 of the node receiving a 64 MiB push: the client pushes again through another node,
  and nothing acknowledged before the kill is lost;
- kill -9 of the node running a GC job: another node takes the job over when its lease runs out
  and finishes it;
- a cron schedule fires each of its occurrences on exactly one node.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import requests

from auth.helpers import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, push_blob, scope, sha256, unique
from conftest import require_tool

from .conftest import Cluster

MiB = 1 << 20
TIMEOUT = (10, 120)  # (connect, read) for requests made without a suite Client


# --- images --------------------------------------------------------------------------------------


@dataclass
class Img:
    """An OCI image: a config, its layers and the manifest over them, to be pushed as repo:tag."""

    repo: str
    tag: str
    layers: list[bytes] = field(repr=False)
    config: bytes = field(init=False, repr=False)
    manifest: bytes = field(init=False, repr=False)

    def __post_init__(self):
        self.config = json.dumps({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"berth-scaleout": os.urandom(8).hex()}},
            # The layers are uncompressed (OCI_LAYER), so their digests are their diff ids.
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer) for layer in self.layers]},
        }).encode()
        self.manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(self.config), "size": len(self.config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": sha256(layer), "size": len(layer)} for layer in self.layers],
        }).encode()

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def layer_digests(self) -> list[str]:
        return [sha256(layer) for layer in self.layers]

    @property
    def blobs(self) -> dict[str, bytes]:
        return {sha256(self.config): self.config, **{sha256(layer): layer for layer in self.layers}}


def push_blob_ok(client, repo: str, data: bytes, where: str = "") -> None:
    r = push_blob(client, repo, data)
    assert r.status_code == 201, f"push of blob {sha256(data)} ({len(data)} bytes) to {repo}{where}: " \
                                 f"{r.status_code} {r.text[:300]}"
    assert r.headers.get("Docker-Content-Digest") == sha256(data), dict(r.headers)


def put_manifest(client, img: Img, reference: str | None = None, where: str = "") -> None:
    ref = reference or img.tag
    r = client.put(f"/v2/{img.repo}/manifests/{ref}", data=img.manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, f"PUT manifest {img.repo}:{ref}{where}: {r.status_code} {r.text[:300]}"
    assert r.headers.get("Docker-Content-Digest") == img.digest, dict(r.headers)


def push_image(client, img: Img, where: str = "") -> None:
    for data in img.blobs.values():
        push_blob_ok(client, img.repo, data, where)
    put_manifest(client, img, where=where)


def blob_sha256(client, repo: str, digest: str, where: str = "") -> tuple[str, int]:
    """(digest, size) of what GET /v2/<repo>/blobs/<digest> returns (following a redirect to
    the blob store without the registry's credentials, as clients do), hashed as it streams."""
    h = hashlib.sha256()
    size = 0
    with client.get(f"/v2/{repo}/blobs/{digest}", stream=True) as r:
        assert r.status_code == 200, f"GET blob {digest} of {repo}{where}: {r.status_code} {r.text[:300]}"
        for chunk in r.iter_content(MiB):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def pull_image(client, img: Img, reference: str | None = None, where: str = "") -> None:
    """Pulls `img` (manifest by `reference`, default its tag, then every blob) and checks every
    digest."""
    ref = reference or img.tag
    r = client.get(f"/v2/{img.repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200, f"GET manifest {img.repo}:{ref}{where}: {r.status_code} {r.text[:300]}"
    assert sha256(r.content) == img.digest, f"{img.repo}:{ref}{where} has digest {sha256(r.content)}, " \
                                            f"expected {img.digest}"
    assert r.headers.get("Docker-Content-Digest") == img.digest, dict(r.headers)
    for digest, data in img.blobs.items():
        got, size = blob_sha256(client, img.repo, digest, where)
        assert (got, size) == (digest, len(data)), f"blob {digest} of {img.repo}{where} came back as {got}, {size} bytes"


def manifest_get(client, repo: str, reference: str) -> requests.Response:
    return client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})


def location(r: requests.Response) -> str:
    """The path (and query) of a response's Location, to be sent to any node."""
    parts = urlsplit(r.headers["Location"])
    return parts.path + (f"?{parts.query}" if parts.query else "")


def clients(cluster: Cluster, token: str) -> dict:
    return {i: cluster.client(i, token) for i in (1, 2, 3)}


# --- 1. push through one node, pull through the others ------------------------------------------


def test_push_on_node1_pull_on_nodes_2_and_3_with_node1s_token(cluster):
    repo = unique("so/app")
    # One token, issued by node 1, used on every node: the signing key is the cluster's.
    token = cluster.token(1, scope(repo, "pull", "push"))
    c = clients(cluster, token)
    img = Img(repo, "v1", [os.urandom(MiB + 17), os.urandom(300 * 1024 + 3)])
    push_image(c[1], img, " through node 1")

    for i in (2, 3):
        pull_image(c[i], img, "v1", f" through node {i} with node 1's token")
        pull_image(c[i], img, img.digest, f" through node {i} with node 1's token")

    # Redirect on: a blob GET answers 307 to a presigned URL of the S3 server, which serves the
    # bytes to a client that sends no registry credentials.
    layer = img.layer_digests[0]
    r = c[2].get(f"/v2/{repo}/blobs/{layer}", allow_redirects=False)
    assert r.status_code == 307, f"blob GET on node 2 with redirect on: {r.status_code} {r.text[:300]}"
    target = urlsplit(r.headers["Location"])
    endpoint = urlsplit(cluster.s3_endpoint)
    assert (target.scheme, target.netloc) == (endpoint.scheme, endpoint.netloc), \
        f"the redirect points at {r.headers['Location']}, not at the S3 endpoint {cluster.s3_endpoint}"
    assert target.path.startswith(f"/{cluster.s3_bucket}/{cluster.s3_prefix}"), \
        f"the redirect is outside the cluster's bucket and prefix: {r.headers['Location']}"
    assert "X-Amz-Signature" in parse_qs(target.query), f"not a presigned URL: {r.headers['Location']}"
    s3 = requests.get(r.headers["Location"], timeout=TIMEOUT)
    assert s3.status_code == 200, f"GET of the presigned URL: {s3.status_code} {s3.text[:300]}"
    assert sha256(s3.content) == layer

    # A HEAD is answered by the node itself: 200 with the size and the digest, no redirect.
    for i in (1, 2, 3):
        r = c[i].head(f"/v2/{repo}/blobs/{layer}")
        assert r.status_code == 200, f"blob HEAD on node {i}: {r.status_code} {dict(r.headers)}"
        assert r.headers.get("Content-Length") == str(len(img.layers[0])), dict(r.headers)
        assert r.headers.get("Docker-Content-Digest") == layer, dict(r.headers)

    # And the other way round: a token of node 3 works on node 1.
    token3 = cluster.token(3, scope(repo, "pull"))
    r = cluster.client(1, token3).head(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200, f"HEAD manifest on node 1 with node 3's token: {r.status_code}"
    assert r.headers.get("Docker-Content-Digest") == img.digest


def test_skopeo_copy_from_node1_inspect_through_node3_push_through_node2(cluster, tmp_path):
    skopeo = require_tool("skopeo")
    from clients.conftest import run, sandboxed

    repo = unique("so/skopeo")
    token = cluster.token(1, scope(repo, "pull", "push"))
    img = Img(repo, "v1", [os.urandom(700 * 1024), os.urandom(2 * MiB + 5)])
    push_image(cluster.client(1, token), img, " through node 1")

    home = tmp_path / "skopeo"
    (home / "tmp").mkdir(parents=True)
    (home / "auth.json").write_text('{"auths": {}}')
    env = {**os.environ, "REGISTRY_AUTH_FILE": str(home / "auth.json"), "TMPDIR": str(home / "tmp")}
    creds = f"{cluster.creds[0]}:{cluster.creds[1]}"

    def sk(*args: str, **kwargs):
        argv = [skopeo, "--tmpdir", str(home / "tmp"), *args]
        return run(sandboxed(argv, home / "sandbox"), env=env, shown=argv,
                   context=lambda: cluster.log_tails(15), **kwargs)

    def ref(node: int, repository: str, tag: str) -> str:
        return f"docker://{cluster.node(node).host}/{repository}:{tag}"

    out = tmp_path / "copy"
    sk("copy", "--src-tls-verify=false", "--src-creds", creds, ref(1, repo, "v1"), f"dir:{out}")
    assert (out / "manifest.json").read_bytes() == img.manifest, "skopeo got other manifest bytes from node 1"
    for digest, data in img.blobs.items():
        assert (out / digest.split(":", 1)[1]).read_bytes() == data, f"blob {digest} copied from node 1 differs"

    raw = sk("inspect", "--raw", "--tls-verify=false", "--creds", creds, ref(3, repo, "v1"), binary=True).stdout
    assert raw == img.manifest, "node 3 serves other manifest bytes than node 1 received"
    info = json.loads(sk("inspect", "--tls-verify=false", "--creds", creds, ref(3, repo, "v1")).stdout)
    assert info["Digest"] == img.digest, info
    assert info["Layers"] == img.layer_digests, info

    # The copy goes back in through node 2, under another name, and is whole on node 3.
    # (--preserve-digests: the layers are uncompressed, which skopeo would gzip otherwise.)
    repo2 = unique("so/skopeo-back")
    digestfile = tmp_path / "pushed.digest"
    sk("copy", "--preserve-digests", "--digestfile", str(digestfile), "--dest-tls-verify=false", "--dest-creds",
       creds, f"dir:{out}", ref(2, repo2, "v1"))
    assert digestfile.read_text().strip() == img.digest
    raw = sk("inspect", "--raw", "--tls-verify=false", "--creds", creds, ref(3, repo2, "v1"), binary=True).stdout
    assert raw == img.manifest
    token2 = cluster.token(3, scope(repo2, "pull"))
    pull_image(cluster.client(3, token2), _same_image(img, repo2), "v1",
               " (pushed by skopeo through node 2) through node 3")


def _same_image(img: Img, repo: str) -> Img:
    """`img` under another repository name (same bytes, same digests)."""
    copy = Img.__new__(Img)
    copy.repo, copy.tag, copy.layers, copy.config, copy.manifest = repo, img.tag, img.layers, img.config, img.manifest
    return copy


# --- 2. one chunked upload through three nodes ---------------------------------------------------


def test_chunked_upload_alternating_nodes(cluster):
    repo = unique("so/chunked")
    token = cluster.token(1, scope(repo, "pull", "push"))
    c = clients(cluster, token)
    chunk1 = os.urandom(3 * MiB + 1)
    chunk2 = os.urandom(2 * MiB + 7)
    data = chunk1 + chunk2
    digest, total = sha256(data), len(data)
    octet = {"Content-Type": "application/octet-stream"}

    r = c[1].post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, f"POST on node 1: {r.status_code} {r.text[:300]}"
    upload = location(r)

    r = c[2].patch(upload, data=chunk1, headers={**octet, "Content-Range": f"0-{len(chunk1) - 1}"})
    assert r.status_code == 202, f"PATCH chunk 1 on node 2: {r.status_code} {r.text[:300]}"
    assert r.headers.get("Range") == f"0-{len(chunk1) - 1}", dict(r.headers)
    upload = location(r)

    r = c[3].patch(upload, data=chunk2, headers={**octet, "Content-Range": f"{len(chunk1)}-{total - 1}"})
    assert r.status_code == 202, f"PATCH chunk 2 on node 3: {r.status_code} {r.text[:300]}"
    assert r.headers.get("Range") == f"0-{total - 1}", dict(r.headers)
    upload = location(r)

    r = c[1].get(upload)
    assert r.status_code == 204, f"upload status on node 1: {r.status_code} {r.text[:300]}"
    assert r.headers.get("Range") == f"0-{total - 1}", f"node 1 does not see both chunks: {dict(r.headers)}"

    # Chunks replayed at offsets that are no longer the session's, on nodes that did not take
    # them: 416 with the session's real Range, and the session is unchanged.
    r = c[1].patch(upload, data=chunk2, headers={**octet, "Content-Range": f"{len(chunk1)}-{total - 1}"})
    assert r.status_code == 416, f"stale PATCH (chunk 2 again) on node 1: {r.status_code} {r.text[:300]}"
    assert r.headers.get("Range") == f"0-{total - 1}", dict(r.headers)
    r = c[2].patch(upload, data=chunk1, headers={**octet, "Content-Range": f"0-{len(chunk1) - 1}"})
    assert r.status_code == 416, f"stale PATCH (chunk 1 again) on node 2: {r.status_code} {r.text[:300]}"
    r = c[3].get(upload)
    assert r.status_code == 204 and r.headers.get("Range") == f"0-{total - 1}", (r.status_code, dict(r.headers))

    r = c[2].put(upload, params={"digest": digest})
    assert r.status_code == 201, f"PUT ?digest= on node 2: {r.status_code} {r.text[:300]}"
    assert r.headers.get("Docker-Content-Digest") == digest, dict(r.headers)

    for i in (1, 2, 3):
        assert blob_sha256(c[i], repo, digest, f" on node {i}") == (digest, total)
        r = c[i].head(f"/v2/{repo}/blobs/{digest}")
        assert r.status_code == 200 and r.headers.get("Content-Length") == str(total), (i, r.status_code, dict(r.headers))
    r = c[3].get(upload)
    assert r.status_code == 404, f"the closed session is still there on node 3: {r.status_code}"


# --- 3. tags and deletes are seen everywhere ------------------------------------------------------


def test_tag_move_and_manifest_delete_seen_by_every_node(cluster):
    repo = unique("so/tags")
    token = cluster.token(1, scope(repo, "pull", "push", "delete"))
    c = clients(cluster, token)
    a = Img(repo, "t", [os.urandom(2048)])
    b = Img(repo, "t", [os.urandom(2048)])

    push_image(c[1], a, " through node 1")
    for i in (2, 3):  # warms whatever nodes 2 and 3 cache about t and A
        r = manifest_get(c[i], repo, "t")
        assert r.status_code == 200 and sha256(r.content) == a.digest, (i, r.status_code)

    push_image(c[2], b, " through node 2")  # t moves to B
    for i in (1, 3):  # no sleep: tags are never cached across nodes
        r = manifest_get(c[i], repo, "t")
        assert r.status_code == 200, (i, r.status_code, r.text[:300])
        assert sha256(r.content) == b.digest and r.headers.get("Docker-Content-Digest") == b.digest, \
            f"node {i} still serves {sha256(r.content)} for t, which node 2 moved to {b.digest}"
        r = c[i].head(f"/v2/{repo}/manifests/t", headers={"Accept": OCI_MANIFEST})
        assert r.headers.get("Docker-Content-Digest") == b.digest, (i, r.status_code, dict(r.headers))

    for i in (1, 2):  # B's payload is now in the caches of nodes 1 and 2
        r = manifest_get(c[i], repo, b.digest)
        assert r.status_code == 200 and sha256(r.content) == b.digest, (i, r.status_code)

    r = c[3].delete(f"/v2/{repo}/manifests/{b.digest}")
    assert r.status_code == 202, f"DELETE of B by digest on node 3: {r.status_code} {r.text[:300]}"

    # Deleting B by digest deleted its tag: a tag lookup is not cached, so at once.
    for i in (1, 2):
        r = manifest_get(c[i], repo, "t")
        assert r.status_code == 404, f"node {i} still resolves t after node 3 deleted {b.digest}: {r.status_code}"

    # A GET by digest may be answered from a node's in-memory payload cache. Node 3's delete
    # commits, then PostgreSQL delivers `NOTIFY berth_cache` to the listeners of nodes 1 and 2
    # asynchronously: until it arrives they may still serve B. So the 404 is polled for, bounded
    # by 2 s, which is the LISTEN delivery latency allowed here (it is milliseconds on loopback).
    for i in (1, 2):
        start = time.monotonic()
        deadline = start + 2.0
        while True:
            r = manifest_get(c[i], repo, b.digest)
            if r.status_code == 404:
                print(f"node {i} answered 404 for the deleted manifest after {time.monotonic() - start:.3f} s")
                break
            assert r.status_code == 200, (i, r.status_code, r.text[:300])
            assert time.monotonic() < deadline, \
                f"node {i} still serves {b.digest} 2 s after node 3 deleted it"
            time.sleep(0.02)

    for i in (1, 2, 3):  # A, untagged now, is untouched
        r = manifest_get(c[i], repo, a.digest)
        assert r.status_code == 200 and sha256(r.content) == a.digest, (i, r.status_code)


# --- 4. kill -9 of the node receiving a push -----------------------------------------------------


def test_kill_9_during_a_push_then_the_client_pushes_through_another_node(make_cluster):
    cluster = make_cluster("kill-push")
    repo = unique("so/killed")
    token = cluster.token(1, scope(repo, "pull", "push"))
    c = clients(cluster, token)

    before = [Img(repo, f"before-{i}", [os.urandom(64 * 1024 + i), os.urandom(5000 + i)]) for i in range(3)]
    for img in before:
        push_image(c[1], img, " through node 1")
    big = os.urandom(64 * MiB)
    big_digest = sha256(big)
    final = Img(repo, "big", [os.urandom(4096), big])
    # The config and the small layer are acknowledged by node 1 before it dies.
    push_blob_ok(c[1], repo, final.config, " through node 1")
    push_blob_ok(c[1], repo, final.layers[0], " through node 1")

    halfway, killed = threading.Event(), threading.Event()
    outcome: dict = {}

    def body():
        for i in range(64):
            if i == 16:
                halfway.set()
                killed.wait(60)  # node 1 dies with 16 MiB of the body received
            yield big[i * MiB:(i + 1) * MiB]
            time.sleep(0.005)

    def push():
        session = cluster.client(1, token)
        try:
            outcome["response"] = session.post(
                f"/v2/{repo}/blobs/uploads/", params={"digest": big_digest}, data=body(),
                headers={"Content-Type": "application/octet-stream"}, timeout=(10, 60),
            )
        except requests.RequestException as e:
            outcome["error"] = e

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    try:
        assert halfway.wait(60), f"the push never got 16 MiB into node 1: {outcome}"
        cluster.node(1).kill()
    finally:
        killed.set()
    pusher.join(90)
    assert not pusher.is_alive(), "the interrupted push never returned"
    assert "error" in outcome or outcome["response"].status_code != 201, \
        f"a push that node 1 never finished was acknowledged: {outcome}"
    print(f"the push interrupted by node 1's death ended with {outcome}")

    # Nothing of the interrupted push is visible.
    for i in (2, 3):
        r = c[i].head(f"/v2/{repo}/blobs/{big_digest}")
        assert r.status_code == 404, f"the half-pushed blob is visible on node {i}: {r.status_code}"

    # The client pushes the whole blob again through node 2, then the manifest.
    push_blob_ok(c[2], repo, big, " through node 2")
    put_manifest(c[2], final, where=" through node 2")
    pull_image(c[3], final, where=" through node 3")
    pull_image(c[3], final, final.digest, " through node 3")

    # Everything acknowledged before the kill is intact on the surviving nodes.
    for img in before:
        for i in (2, 3):
            pull_image(c[i], img, where=f" through node {i} after node 1 was killed")

    # Node 1 comes back on its data directory and port, and serves the image its death interrupted.
    cluster.node(1).restart()
    pull_image(cluster.client(1, token), final, where=" through the restarted node 1")
    pull_image(cluster.client(1, token), before[0], where=" through the restarted node 1")


# --- 5. a GC job of a killed node is finished by another ----------------------------------------

GC_ENV = {
    "BERTH_GC__GRACE_PERIOD": "1s",
    "BERTH_UPLOADS__PURGE_AFTER": "1s",  # gc.grace_period may not be shorter
    "BERTH_GC__UNTAGGED_AGE": "0s",
    "BERTH_GC__DELETE_RATE": "2",  # blob deletions per second: the run lasts 12 s
}


def owner_pid(owner: str | None) -> int | None:
    """The pid in a worker name `<host>/<pid>/<random>`."""
    try:
        return int((owner or "").split("/")[1])
    except (IndexError, ValueError):
        return None


def test_gc_job_of_a_killed_node_is_finished_by_another_node(make_cluster):
    cluster = make_cluster("gc-takeover", GC_ENV)
    repos = [unique("so/gc") for _ in range(3)]
    token = cluster.token(1, *(scope(r, "pull", "push", "delete") for r in repos))
    c1 = cluster.client(1, token)

    base = os.urandom(8192)  # a layer every image has: it must survive
    kept = Img(repos[0], "kept", [base, os.urandom(3000)])
    push_image(c1, kept, " through node 1")
    doomed = [Img(repos[i % 3], f"doomed-{i}", [base, os.urandom(1024 + i)]) for i in range(12)]
    for img in doomed:
        push_image(c1, img, " through node 1")
    for img in doomed:
        r = c1.delete(f"/v2/{img.repo}/manifests/{img.digest}")
        assert r.status_code == 202, f"DELETE {img.repo}@{img.digest}: {r.status_code} {r.text[:300]}"
    doomed_blobs = {d: img.repo for img in doomed for d in img.blobs if d not in kept.blobs}
    assert len(doomed_blobs) == 24  # a config and a layer each: 12 s at 2 deletions per second
    # Not synchronisation: the blobs must be older than gc.grace_period (1 s) to be collected.
    time.sleep(1.5)

    admin2 = cluster.admin(2)

    def live_blobs(admin) -> int:
        r = admin.get("/api/v1/storage")
        assert r.status_code == 200, f"GET /api/v1/storage: {r.status_code} {r.text[:300]}"
        return r.json()["blob_count"]

    assert live_blobs(admin2) == len(kept.blobs) + len(doomed_blobs)

    r = cluster.admin(2).post("/api/v1/gc")
    assert r.status_code == 202, f"POST /api/v1/gc on node 2: {r.status_code} {r.text[:300]}"
    job_id = r.json()["job"]

    def get_job(admin) -> dict:
        r = admin.get(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 200, f"GET /api/v1/jobs/{job_id}: {r.status_code} {r.text[:300]}"
        return r.json()

    deadline = time.monotonic() + 20
    while True:
        job = get_job(admin2)
        if job["state"] == "running" and job.get("lease_owner"):
            break
        assert job["state"] == "queued", f"the GC job ended before it could be interrupted: {job}"
        assert time.monotonic() < deadline, f"no node started the GC job within 20 s: {job}"
        time.sleep(0.05)
    first_owner = job["lease_owner"]
    # Node 2 queued the job and wakes its own runner, so it normally claims it; the others poll
    # every second and may win the claim. Whichever node runs it is the one killed.
    victim = cluster.node_of_pid(owner_pid(first_owner))
    assert victim is not None, f"lease owner {first_owner!r} is no node's worker (pids " \
                               f"{[n.pid for n in cluster.nodes]})"
    # Killed in the middle of its work: once it has deleted a few blobs (2 per second).
    deadline = time.monotonic() + 20
    while live_blobs(admin2) > len(kept.blobs) + len(doomed_blobs) - 3:
        assert time.monotonic() < deadline, f"the GC run deleted nothing within 20 s: {get_job(admin2)}"
        time.sleep(0.05)
    job = get_job(admin2)
    assert job["state"] == "running" and job["lease_owner"] == first_owner, \
        f"the GC job changed hands or ended before node {victim.index} was killed: {job}"
    victim.kill()
    survivors = [n for n in cluster.nodes if n is not victim]
    admin = cluster.admin(survivors[0].index)

    owners_after_kill = set()
    deadline = time.monotonic() + 60  # lease (3 s) + poll (1 s) + the rest of the run (< 12 s)
    while True:
        job = get_job(admin)
        if job.get("lease_owner"):
            owners_after_kill.add(job["lease_owner"])
        if job["state"] in ("succeeded", "failed", "dead"):
            break
        assert time.monotonic() < deadline, f"the GC job did not finish within 60 s of node " \
                                            f"{victim.index}'s death: {job}"
        time.sleep(0.1)
    assert job["state"] == "succeeded", f"the taken-over GC job did not succeed: {job}"
    # Claimed twice: by the killed node, then by one survivor once the lease ran out (a third
    # claim would mean a live worker lost its lease, i.e. heartbeats slower than the lease).
    assert job["attempts"] == 2, f"expected one claim by the killed node and one takeover: {job}"
    takers = {o for o in owners_after_kill if o != first_owner}
    survivor_pids = {n.pid for n in survivors}
    assert takers, f"no other worker was seen running the job after node {victim.index} died: {job}"
    assert {owner_pid(o) for o in takers} <= survivor_pids, \
        f"the job was taken over by {takers}, not by a surviving node (pids {survivor_pids})"
    assert not job["result"].get("errors"), job["result"]
    # Work done before the kill stays done: the takeover deleted only what was left. (Of the 3
    # or more blobs the killed run had taken out of service, it may not have finished the last:
    # one sweep is in flight at a time.)
    assert 1 <= job["result"]["deleted_blobs"] <= len(doomed_blobs) - 2, job["result"]
    print(f"GC job {job_id}: run by {first_owner} (node {victim.index}, killed), taken over by {takers}; "
          f"report of the last attempt: {job['result']}")

    # The deleted images are gone (the blobs one run had marked for deletion included: a blob
    # without a live row answers 404), the kept image with the shared layer pulls whole.
    for n in survivors:
        cn = cluster.client(n.index, token)
        for digest, repo in doomed_blobs.items():
            r = cn.head(f"/v2/{repo}/blobs/{digest}")
            assert r.status_code == 404, f"collected blob {digest} still answers {r.status_code} on node {n.index}"
        for img in doomed:
            assert manifest_get(cn, img.repo, img.digest).status_code == 404
        pull_image(cn, kept, where=f" through node {n.index}")
    usage = admin.get("/api/v1/storage").json()  # the live blob rows left
    assert usage["blob_count"] == len(kept.blobs), usage
    assert usage["stored_bytes"] == sum(len(b) for b in kept.blobs.values()), usage

    # The bytes are gone from S3 too. A blob the killed run had marked `deleting` is finished by
    # the first run that ends after its sweep lease; if the taken-over run ended too early for
    # that, the next run finishes it (README, "Crashes").
    if cluster.s3_blob_digests() != set(kept.blobs):
        print(f"S3 still holds {sorted(cluster.s3_blob_digests() - set(kept.blobs))}: one more GC run")
        r = admin.post("/api/v1/gc")
        assert r.status_code == 202, r.text
        second = r.json()["job"]
        deadline = time.monotonic() + 30
        while (j := admin.get(f"/api/v1/jobs/{second}").json())["state"] not in ("succeeded", "failed", "dead"):
            assert time.monotonic() < deadline, j
            time.sleep(0.1)
        assert j["state"] == "succeeded", j
    assert cluster.s3_blob_digests() == set(kept.blobs), "S3 holds other blobs than the kept image's"


# --- 6. a schedule fires on exactly one node ----------------------------------------------------

# croner (berth-jobs) takes an optional seconds field first: every 2 seconds.
EVERY_2S = "*/2 * * * * *"
PERIOD_MS = 2000
# Keys under which a scheduled job's payload may carry the occurrence it was fired for.
DUE_KEYS = ("due", "due_ms", "due_at", "scheduled_at", "scheduled_for", "occurrence", "run_at")


def occurrence_of(job: dict) -> int:
    """The due time (ms) a scheduled job was fired for: from its payload when it says, else
    the 2-second slot its creation falls in. A node fires an occurrence at or after its due
    time and before the next one (it polls every 100 ms, and the next due time it sets is the
    first after *now*), so two jobs in one slot are one occurrence fired twice."""
    payload = job.get("payload") or {}
    for key in DUE_KEYS:
        if isinstance(payload.get(key), (int, float)):
            return int(payload[key])
    return job["created_at"] // PERIOD_MS * PERIOD_MS


def test_a_schedule_fires_each_occurrence_on_exactly_one_node(make_cluster):
    began = time.time()
    # The nodes poll every 100 ms (not 1 s): all three look at each occurrence within 100 ms of
    # its due time, so they race for it, and only the conditional UPDATE keeps it to one job.
    cluster = make_cluster("schedule", {"BERTH_GC__SCHEDULE": EVERY_2S, "BERTH_JOBS__POLL_INTERVAL": "100ms"})
    admin = cluster.admin(1)

    def scheduled_jobs() -> list[dict]:
        r = admin.get("/api/v1/jobs", params={"kind": "gc", "limit": "500"})
        assert r.status_code == 200, f"GET /api/v1/jobs: {r.status_code} {r.text[:300]}"
        return [j for j in r.json()["jobs"] if (j.get("payload") or {}).get("schedule") == "gc"]

    # At least three occurrences after all three nodes are up.
    all_up = time.time()
    deadline = time.monotonic() + 20
    while True:
        jobs = scheduled_jobs()
        late = [j for j in jobs if j["created_at"] > all_up * 1000]
        if len(late) >= 3 and all(j["state"] == "succeeded" for j in jobs):
            break
        assert time.monotonic() < deadline, f"the schedule {EVERY_2S!r} did not fire 3 times within 20 s: {jobs}"
        time.sleep(0.2)

    by_occurrence: dict[int, list[dict]] = {}
    for j in jobs:
        by_occurrence.setdefault(occurrence_of(j), []).append(j)
    duplicates = {due: [(j["id"], j["created_at"]) for j in js] for due, js in by_occurrence.items() if len(js) > 1}
    assert not duplicates, f"occurrences fired more than once (due ms: [(job, created_at)]): {duplicates}"
    for j in jobs:
        assert j["attempts"] == 1, f"a scheduled job ran more than once: {j}"

    # Each firing is logged by the node that fired it: across the nodes, no more firings than
    # occurrences came due since node 1 installed the schedule, and at least one per job.
    fired = {n.index: sum("schedule fired" in line for line in n.log_text().splitlines()) for n in cluster.nodes}
    ended = time.time()  # after reading the logs: every firing counted happened before it
    occurrences = int(ended * 1000) // PERIOD_MS - int(began * 1000) // PERIOD_MS
    print(f"{len(jobs)} scheduled jobs over {occurrences} occurrences; firings logged by node: {fired}")
    assert len(jobs) <= sum(fired.values()) <= occurrences, \
        f"{sum(fired.values())} firings logged ({fired} by node) for {occurrences} occurrences " \
        f"and {len(jobs)} jobs"
