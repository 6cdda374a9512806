"""The pull-through cache of docs/proxy.md, black-box: a berth (downstream) caching another berth
(upstream) through the proxy project `up`.

Pulls from the downstream go anonymously through the token flow (the proxy project is public), or
as the downstream's admin with Basic credentials. What the cache asked the upstream is read from
the upstream's JSON request log (see conftest.py). Tests run in file order; each uses images that
no earlier test pulled when it needs a cache miss.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid

import pytest
import requests

from auth.helpers import AutoClient, Client, catalog, fetch_token, sha256
from conftest import free_port, stop_berth

from .conftest import (
    ACCEPT_MANIFESTS,
    BIG_LAYER_SIZE,
    RATE_LIMIT_MARKER,
    RETRY_AFTER,
    TAG_FRESHNESS,
    TIMEOUT,
    Nginx,
    Pushed,
    describe,
    log_tail,
    metric_lines,
    metrics,
    oci_errors,
    settled_log,
    show_log,
    start_downstream,
    start_upstream,
    upstream_fetches,
)


def anonymous(down) -> AutoClient:
    """A client of the downstream that answers Bearer challenges with anonymous tokens."""
    return AutoClient(down.url, None)


def get_manifest(client, pushed: Pushed, reference: str | None = None, **kwargs) -> requests.Response:
    reference = reference or pushed.tag
    return client.get(f"/v2/{pushed.proxied}/manifests/{reference}", headers={"Accept": ACCEPT_MANIFESTS},
                      timeout=kwargs.pop("timeout", TIMEOUT), **kwargs)


def pull_through(client, pushed: Pushed, what: str, context=lambda: "") -> None:
    """Pulls `up/<repo>:<tag>` (manifest, then every blob) and checks every byte against what was
    pushed upstream."""
    r = get_manifest(client, pushed)
    assert r.status_code == 200, f"{what}: manifest {pushed.proxied}:{pushed.tag}: {describe(r)}{context()}"
    assert sha256(r.content) == pushed.digest, (
        f"{what}: manifest {pushed.proxied}:{pushed.tag} has digest {sha256(r.content)}, upstream's is "
        f"{pushed.digest}")
    header = r.headers.get("Docker-Content-Digest")
    assert header in (None, pushed.digest), f"{what}: Docker-Content-Digest {header}, expected {pushed.digest}"
    for digest, data in pushed.blobs.items():
        r = client.get(f"/v2/{pushed.proxied}/blobs/{digest}", timeout=TIMEOUT)
        assert r.status_code == 200, f"{what}: blob {digest} of {pushed.proxied}: {describe(r)}{context()}"
        assert sha256(r.content) == digest and len(r.content) == len(data), (
            f"{what}: blob {digest} of {pushed.proxied} came back as {sha256(r.content)}, {len(r.content)} bytes "
            f"(expected {len(data)})")


def manifest_path(pushed: Pushed, reference: str | None = None) -> str:
    return f"/v2/{pushed.repo}/manifests/{reference or pushed.tag}"


def blob_path(pushed: Pushed, digest: str) -> str:
    return f"/v2/{pushed.repo}/blobs/{digest}"


def count_pull_fetches(log, pushed: Pushed) -> tuple[int, int]:
    """(manifest GETs by tag or digest, blob GETs) the upstream answered for `pushed`, 401s aside."""
    manifests = sum(len(upstream_fetches(log, "GET", manifest_path(pushed, ref)))
                    for ref in (pushed.tag, pushed.digest))
    blobs = sum(len(upstream_fetches(log, "GET", blob_path(pushed, d))) for d in pushed.blobs)
    return manifests, blobs


# --- 1. a pull goes upstream once, then comes from the cache -------------------------------------


def test_pull_through_then_from_cache(upstream, downstream):
    small = upstream.images["small"]
    client = anonymous(downstream)
    context = lambda: f"\nupstream requests:{show_log(upstream.log(), '/lib/small/')}" + log_tail(
        downstream.reg.log_path, 15)

    pull_through(client, small, "first pull (cache miss)", context)
    log = upstream.log()
    first_manifests, first_blobs = count_pull_fetches(log, small)
    assert first_manifests >= 1 and first_blobs >= len(small.blobs), (
        f"the first pull of {small.proxied}:1 was served, yet the upstream logged {first_manifests} manifest "
        f"GETs and {first_blobs} blob GETs for lib/small:{show_log(log, '/lib/small/')}")

    pull_through(client, small, "second pull (within tag_freshness)", context)
    log = upstream.log()
    manifests, blobs = count_pull_fetches(log, small)
    assert (manifests, blobs) == (first_manifests, first_blobs), (
        f"the second pull of {small.proxied}:1 went upstream again: manifest GETs {first_manifests} -> "
        f"{manifests}, blob GETs {first_blobs} -> {blobs}; upstream requests for lib/small:"
        f"{show_log(log, '/lib/small/')}")

    # Past tag_freshness the tag is revalidated (a HEAD upstream is allowed), but an unchanged
    # digest must not be fetched again.
    time.sleep(TAG_FRESHNESS + 1)
    pull_through(client, small, f"third pull (after tag_freshness {TAG_FRESHNESS:g}s)", context)
    log = upstream.log()
    manifests, blobs = count_pull_fetches(log, small)
    assert (manifests, blobs) == (first_manifests, first_blobs), (
        f"the pull of {small.proxied}:1 after tag_freshness fetched from the upstream again (only a HEAD "
        f"is expected): manifest GETs {first_manifests} -> {manifests}, blob GETs {first_blobs} -> {blobs}; "
        f"upstream requests for lib/small:{show_log(log, '/lib/small/')}")


# --- 2. containerd mirror: the image reference names the upstream ----------------------------------


def test_containerd_mirror_pull_via_hosts_dir(upstream, downstream, containerd, tmp_path):
    multi = upstream.images["multi"]
    dead_port = free_port()  # nothing listens: a mirror miss must not reach the upstream directly
    hosts_dir = tmp_path / "hosts"
    host_dir = hosts_dir / upstream.reg.host
    host_dir.mkdir(parents=True)
    (host_dir / "hosts.toml").write_text(
        f'server = "http://127.0.0.1:{dead_port}"\n'
        f'[host."{downstream.url}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        "  skip_verify = true\n"
    )
    ref = f"{upstream.reg.host}/{multi.repo}:{multi.tag}"
    namespace = f"proxy-{uuid.uuid4().hex[:8]}"
    context = lambda: (log_tail(containerd.daemon.log_path, 15) + log_tail(downstream.reg.log_path, 25)
                       + f"\nupstream requests:{show_log(upstream.log(), '/lib/multi/')}")
    containerd.ctr(namespace, "images", "pull", "--hosts-dir", str(hosts_dir), "--platform", "linux/amd64", ref,
                   context=context, timeout=180)

    lines = containerd.ctr(namespace, "images", "ls").stdout.splitlines()
    listed = {line.split()[0]: line.split()[2] for line in lines[1:] if line.strip()}
    assert listed.get(ref) == multi.digest, (
        f"ctr images ls after the mirrored pull: {listed}; expected {ref} -> {multi.digest}")
    amd64 = next(img for img in multi.children.values() if img.architecture == "amd64")
    for blob in [amd64.manifest, amd64.config, *amd64.layers]:
        got = containerd.ctr(namespace, "content", "get", blob.digest, binary=True).stdout
        assert got == blob.data, f"containerd holds {sha256(got)} ({len(got)} bytes) for {blob.digest}"

    repos = catalog(Client(downstream.url, basic=downstream.admin))
    assert f"up/{multi.repo}" in repos, (
        f"after the mirrored pull the downstream's catalog (as admin) is {repos}, without up/{multi.repo}"
        f"{log_tail(downstream.reg.log_path, 20)}")
    # The downstream, not containerd, went to the upstream (containerd's server is a dead port).
    log = upstream.log()
    assert upstream_fetches(log, "GET", manifest_path(multi, amd64.manifest.digest)) or upstream_fetches(
        log, "GET", manifest_path(multi)), f"the upstream never served lib/multi:{show_log(log, '/lib/multi/')}"


# --- 3. one upstream fetch for 100 concurrent misses ---------------------------------------------


def test_concurrent_misses_share_one_upstream_fetch(upstream, downstream):
    big = upstream.images["big"]
    client = anonymous(downstream)
    r = get_manifest(client, big)
    assert r.status_code == 200, f"manifest {big.proxied}:1: {describe(r)}"
    layers = [layer["digest"] for layer in r.json().get("layers", [])]
    assert layers == big.layers, f"{big.proxied}:1 lists layers {layers}, upstream pushed {big.layers}"
    layer = layers[0]
    before = upstream_fetches(upstream.log(), "GET", blob_path(big, layer))
    assert before == [], f"the layer {layer} was fetched before the concurrent GETs: {before}"

    # One anonymous token for all the threads (each thread has a session of its own).
    token = "Bearer " + fetch_token(downstream.url, None, [f"repository:{big.proxied}:pull"])
    n = 100
    barrier = threading.Barrier(n)
    results: list[tuple | None] = [None] * n

    def fetch(i: int) -> None:
        session = requests.Session()
        try:
            barrier.wait(timeout=60)
            started = time.monotonic()
            with session.get(f"{downstream.url}/v2/{big.proxied}/blobs/{layer}", headers={"Authorization": token},
                             stream=True, timeout=(30, 180)) as resp:
                h = hashlib.sha256()
                size = 0
                snippet = b""
                for chunk in resp.iter_content(1 << 20):
                    if resp.status_code != 200 and len(snippet) < 400:
                        snippet += chunk[:400]
                    h.update(chunk)
                    size += len(chunk)
                results[i] = (resp.status_code, "sha256:" + h.hexdigest(), size, snippet, time.monotonic() - started)
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = ("error", repr(e), 0, b"", 0.0)
        finally:
            session.close()

    threads = [threading.Thread(target=fetch, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "some of the 100 GETs were still running after 10 minutes"

    bad = [(i, res) for i, res in enumerate(results)
           if res is None or res[0] != 200 or res[1] != layer or res[2] != BIG_LAYER_SIZE]
    log = settled_log(upstream.reg, quiet=1.0)
    gets = upstream_fetches(log, "GET", blob_path(big, layer))
    summary = (f"upstream GETs of {blob_path(big, layer)}: {len(gets)} ({[str(g) for g in gets]}); "
               f"all upstream requests for lib/big:{show_log(log, '/lib/big/')}")
    assert not bad, (
        f"{len(bad)} of {n} concurrent GETs of the 64 MiB layer failed (status, digest, bytes, body): "
        + "; ".join(f"#{i}: {res[0]} {res[1]} {res[2]} {res[3][:200]!r}" if res else f"#{i}: no result"
                    for i, res in bad[:10]) + f"\n{summary}{log_tail(downstream.reg.log_path, 20)}")
    assert len(gets) == 1, f"{n} concurrent misses of one blob should share ONE upstream fetch; {summary}"


# --- 4. upstream down: stale-if-error for cached tags, a prompt error for the rest ----------------


@pytest.fixture
def isolated_pair(tmp_path):
    """An upstream/downstream pair of this test's own, so stopping the upstream spares the others."""
    up = start_upstream(tmp_path / "upstream", names=("small", "gone"))
    try:
        down = start_downstream(tmp_path / "downstream", up.reg.url, up.reg.host, up.puller)
    except BaseException:
        stop_berth(up.reg)
        raise
    yield up, down
    stop_berth(down.reg)
    stop_berth(up.reg)


def test_upstream_down_serves_cached_and_fails_fast_for_the_rest(isolated_pair):
    up, down = isolated_pair
    small, gone = up.images["small"], up.images["gone"]
    client = anonymous(down)
    pull_through(client, small, "pull while the upstream is up")

    stop_berth(up.reg)
    assert up.reg.proc.poll() is not None, "the upstream berth did not stop"
    time.sleep(TAG_FRESHNESS + 1.5)  # the cached tag is stale: the next pull tries to revalidate

    context = lambda: log_tail(down.reg.log_path, 20)
    started = time.monotonic()
    pull_through(client, small, "pull of the cached tag with the upstream down (stale-if-error)", context)
    stale_pull = time.monotonic() - started

    started = time.monotonic()
    try:
        r = get_manifest(client, gone, timeout=(10, 90))
    except requests.Timeout:
        pytest.fail(f"GET {gone.proxied}:1 with the upstream down got no answer within "
                    f"{time.monotonic() - started:.0f}s{context()}")
    elapsed = time.monotonic() - started
    assert 400 <= r.status_code < 600, (
        f"uncached {gone.proxied}:1 with the upstream down: expected a 4xx/5xx, got {describe(r)}")
    assert elapsed <= 40, f"uncached {gone.proxied}:1 with the upstream down took {elapsed:.1f}s: {describe(r)}"
    errors = oci_errors(r)
    assert errors and all("code" in e and "message" in e for e in errors), (
        f"uncached {gone.proxied}:1 with the upstream down: the body is no OCI error JSON: {describe(r)}")
    text = json.dumps(errors).lower()
    assert "upstream" in text or up.reg.host in text, (
        f"uncached {gone.proxied}:1 with the upstream down: the error does not mention the upstream: {describe(r)}")

    values, raw = metrics(down.reg)
    assert values.get("berth_proxy_stale_served_total", 0) > 0, (
        f"a stale manifest was served ({stale_pull:.1f}s) but berth_proxy_stale_served_total is not > 0:\n  "
        f"{metric_lines(raw, 'berth_proxy_')}")


# --- 5. upstream rate-limited (429): stale-if-error, and the reason is passed on ----------------


@pytest.fixture
def nginx_pair(upstream, tmp_path):
    """nginx in front of the shared upstream, unlimited at first, and a downstream pointing at it."""
    proxy = Nginx(tmp_path / "nginx", int(upstream.reg.host.rsplit(":", 1)[1]))
    try:
        down = start_downstream(tmp_path / "downstream", proxy.url, f"127.0.0.1:{proxy.port}", upstream.puller)
    except BaseException:
        proxy.stop()
        raise
    yield proxy, down
    stop_berth(down.reg)
    proxy.stop()


def test_upstream_429_serves_cached_and_passes_the_reason_on(upstream, nginx_pair):
    proxy, down = nginx_pair
    small = upstream.images["small"]
    client = anonymous(down)
    context = lambda: log_tail(down.reg.log_path, 20) + log_tail(proxy.prefix / "access.log", 20)
    pull_through(client, small, "priming pull through nginx (not rate-limited yet)", context)
    primed = time.monotonic()

    # Every /v2/ request upstream answers 429 now (the one a minute nginx lets through is spent).
    proxy.reload("all")
    time.sleep(max(0.0, primed + TAG_FRESHNESS + 1 - time.monotonic()))
    pull_through(client, small, "pull of the cached tag while the upstream answers 429 (stale-if-error)", context)

    values, raw = metrics(down.reg)
    assert values.get("berth_proxy_stale_served_total", 0) > 0, (
        f"a stale manifest was served during the 429s but berth_proxy_stale_served_total is not > 0:\n  "
        f"{metric_lines(raw, 'berth_proxy_')}")

    # An uncached tag: whatever the cache asks first (a HEAD has no body to carry a reason) gets
    # the 429, which comes back as a 429 with its Retry-After and a clear error.
    gone = upstream.images["gone"]
    r = get_manifest(client, gone, timeout=(10, 90))
    assert r.status_code == 429, (
        f"uncached {gone.proxied}:1 while the upstream answers 429 to everything: expected 429, got "
        f"{describe(r)}{context()}")
    errors = oci_errors(r)
    assert errors and ("429" in json.dumps(errors) or "rate" in json.dumps(errors).lower()), (
        f"the 429 for {gone.proxied}:1 is no OCI error saying the upstream rate-limits: {describe(r)}")
    assert r.headers.get("Retry-After") == RETRY_AFTER, (
        f"the upstream's Retry-After: {RETRY_AFTER} was not passed on: Retry-After="
        f"{r.headers.get('Retry-After')!r}, {describe(r)}")

    # The upstream lets HEADs through but answers GETs 429 with a reason in an OCI error body:
    # that reason reaches the client.
    proxy.reload("not-head")
    limited = upstream.images["limited"]
    r = get_manifest(client, limited, timeout=(10, 90))
    assert r.status_code == 429, (
        f"uncached {limited.proxied}:1 while the upstream answers GETs with 429: expected 429, got "
        f"{describe(r)}{context()}")
    assert RATE_LIMIT_MARKER in r.text, (
        f"the 429 for {limited.proxied}:1 does not carry the upstream's message ({RATE_LIMIT_MARKER!r}): "
        f"{describe(r)}{context()}")
    assert r.headers.get("Retry-After") == RETRY_AFTER, (
        f"the upstream's Retry-After: {RETRY_AFTER} was not passed on: Retry-After="
        f"{r.headers.get('Retry-After')!r}, {describe(r)}")


# --- 6. read-only -------------------------------------------------------------------------------


def test_push_to_proxy_project_is_denied(downstream):
    admin = Client(downstream.url, basic=downstream.admin)
    r = admin.post("/v2/up/lib/x/blobs/uploads/", timeout=TIMEOUT)
    assert r.status_code == 403, f"push (upload session) to the proxy project as the admin: {describe(r)}"
    errors = oci_errors(r)
    assert errors and errors[0].get("code") == "DENIED", f"expected OCI error code DENIED: {describe(r)}"


# --- 7. metrics ---------------------------------------------------------------------------------


def test_metrics_count_hits_and_misses(upstream, downstream):
    fresh = upstream.images["metrics"]  # no other test pulls it through this downstream
    before, _ = metrics(downstream.reg)
    client = anonymous(downstream)
    pull_through(client, fresh, "first pull (misses)")
    pull_through(client, fresh, "second pull (hits)")
    after, raw = metrics(downstream.reg)
    shown = metric_lines(raw, "berth_proxy_")
    for name in ("berth_proxy_hits_total", "berth_proxy_misses_total"):
        assert after.get(name, 0) > 0, f"{name} is not > 0 after pulls through the proxy:\n  {shown}"
        assert after.get(name, 0) > before.get(name, 0), (
            f"{name} did not grow over a miss-then-hit pull of {fresh.proxied}:1 "
            f"({before.get(name, 0):g} -> {after.get(name, 0):g}):\n  {shown}")


# --- review findings (issue 15) -------------------------------------------------------------------


def test_what_the_upstream_does_not_have_is_a_404_with_the_oci_code(upstream, downstream):
    """Finding 11: an upstream 404 was answered 502; it is a 404 with MANIFEST_UNKNOWN or
    BLOB_UNKNOWN (502 stays for an unreachable or failing upstream)."""
    small = upstream.images["small"]
    client = anonymous(downstream)
    missing_blob = "sha256:" + hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    cases = [
        ("GET", f"/v2/{small.proxied}/manifests/no-such-tag", "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/{small.proxied}/manifests/{missing_blob}", "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/{small.proxied}/blobs/{missing_blob}", "BLOB_UNKNOWN"),
        ("GET", f"/v2/up/lib/no-such-repo/manifests/1", "MANIFEST_UNKNOWN"),
    ]
    for method, path, code in cases:
        r = client.request(method, path, headers={"Accept": ACCEPT_MANIFESTS}, timeout=TIMEOUT)
        assert r.status_code == 404, f"{method} {path}: {describe(r)}{log_tail(downstream.reg.log_path, 10)}"
        errors = oci_errors(r)
        assert errors and errors[0]["code"] == code, f"{method} {path}: {describe(r)}"
    for path in (f"/v2/{small.proxied}/manifests/no-such-tag", f"/v2/{small.proxied}/blobs/{missing_blob}"):
        r = client.head(path, headers={"Accept": ACCEPT_MANIFESTS}, timeout=TIMEOUT)
        assert r.status_code == 404, f"HEAD {path}: {describe(r)}"
