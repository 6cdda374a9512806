"""More of the pull-through cache of docs/proxy.md, black-box (fixtures: conftest.py).

1. A blob whose upstream bytes do not match its digest is never completed for the client nor
   cached: the upstream berth's stored file is corrupted in place (berth serves stored bytes
   without re-hashing them), and every GET through the cache must fail and go upstream again.
2. Docker's `registry-mirrors`: a downstream with `proxy.mirror_listen` serves `docker pull
   mirrortest:1` (docker.io/library/mirrortest, offline: only the mirror can answer) from its
   proxy project `hub`, and never serves local, non-proxy repositories on that listener.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest
import requests

from auth.helpers import Admin, AutoClient, Client, catalog, push_blob, push_image, sha256
from auth.helpers import Image as SmallImage
from clients.images import OCI_MANIFEST, Image as PlatformImage, random_tar
from conftest import free_port, require_tool, start_berth, stop_berth, wait_http

from .conftest import (
    TIMEOUT,
    Upstream,
    describe,
    log_tail,
    metric_lines,
    metrics,
    push_simple,
    settled_log,
    show_log,
    start_downstream,
    start_upstream,
    toml_str,
    upstream_fetches,
)

CORRUPT_LAYER_SIZE = 8 * 1024 * 1024


def blob_files(data_dir: Path, digest: str) -> list[Path]:
    """Every stored generation of `digest` under a berth's data directory
    (`blobs/sha256/<first two hex>/<hex>/<generation>`)."""
    hexpart = digest.split(":", 1)[1]
    return sorted(p for p in data_dir.glob(f"**/blobs/sha256/{hexpart[:2]}/{hexpart}/*") if p.is_file())


def labeled_value(raw: str, name: str, labels: str) -> float:
    """The value of the series `name{labels}` in a /metrics text (0 when absent)."""
    pattern = re.compile(r"^" + re.escape(name) + r"\{" + re.escape(labels) + r"\}\s+(\S+)", re.M)
    m = pattern.search(raw)
    return float(m.group(1)) if m else 0.0


# --- 1. corrupt upstream bytes ---------------------------------------------------------------------


@pytest.fixture
def corrupt_pair(tmp_path):
    """An upstream with lib/corrupt:1 (one 8 MiB random layer) and a downstream caching it as
    up/lib/corrupt."""
    up = start_upstream(tmp_path / "upstream", names=())
    try:
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": []},
                             "e2e": secrets.token_hex(8)}).encode()
        image = SmallImage(config=config, layer=os.urandom(CORRUPT_LAYER_SIZE))
        up.images["corrupt"] = push_simple(Client(up.reg.url, basic=up.admin), "lib/corrupt", "1", image)
        down = start_downstream(tmp_path / "downstream", up.reg.url, up.reg.host, up.puller)
    except BaseException:
        stop_berth(up.reg)
        raise
    yield up, down
    stop_berth(down.reg)
    stop_berth(up.reg)


def corrupt_in_place(path: Path, size: int) -> None:
    """Flips 4 KiB in the middle of `path` (same size, same inode)."""
    assert path.stat().st_size == size, f"{path} holds {path.stat().st_size} bytes, expected {size}"
    offset = size // 2
    with open(path, "r+b") as f:
        f.seek(offset)
        chunk = f.read(4096)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in chunk))
        f.flush()
        os.fsync(f.fileno())


def fetch_blob(client: requests.Session, path: str) -> dict:
    """GET `path`, streamed: status, Content-Length, bytes received, their digest and the error
    the transfer ended with (None: it ended cleanly)."""
    out = {"status": None, "content_length": None, "received": 0, "digest": None, "error": None, "snippet": b""}
    h = hashlib.sha256()
    try:
        with client.get(path, stream=True, timeout=(10, 60)) as r:
            out["status"] = r.status_code
            out["content_length"] = r.headers.get("Content-Length")
            for chunk in r.iter_content(1 << 16):
                if r.status_code != 200 and len(out["snippet"]) < 400:
                    out["snippet"] += chunk[:400]
                h.update(chunk)
                out["received"] += len(chunk)
    except requests.exceptions.ReadTimeout as e:
        out["error"] = f"timeout: {e!r}"
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as e:
        out["error"] = repr(e)
    out["digest"] = "sha256:" + h.hexdigest()
    return out


def test_corrupt_upstream_blob_is_never_completed_nor_cached(corrupt_pair):
    up, down = corrupt_pair
    pushed = up.images["corrupt"]
    layer = pushed.layers[0]
    files = blob_files(up.reg.data_dir, layer)
    assert len(files) == 1, f"expected one stored file for {layer} in the upstream's data, found {files}"
    corrupt_in_place(files[0], CORRUPT_LAYER_SIZE)

    upstream_path = f"/v2/{pushed.repo}/blobs/{layer}"
    # The premise: the upstream now serves wrong bytes under that digest.
    r = Client(up.reg.url, basic=up.admin).get(upstream_path, timeout=TIMEOUT)
    assert r.status_code == 200 and len(r.content) == CORRUPT_LAYER_SIZE and sha256(r.content) != layer, (
        f"test premise: after corrupting {files[0]} the upstream should serve {CORRUPT_LAYER_SIZE} wrong bytes "
        f"for {layer}; got {r.status_code}, {len(r.content)} bytes, digest {sha256(r.content)}")
    baseline = len(upstream_fetches(settled_log(up.reg), "GET", upstream_path))

    _, raw = metrics(down.reg)
    misses_before = labeled_value(raw, "berth_proxy_misses_total", 'kind="blob"')

    client = AutoClient(down.url, None)  # the proxy project is public
    down_path = f"/v2/{pushed.proxied}/blobs/{layer}"
    context = lambda: log_tail(down.reg.log_path, 20)
    for attempt in (1, 2):
        got = fetch_blob(client, down_path)
        shown = (f"attempt {attempt}: GET {down.url}{down_path} (upstream bytes corrupt) -> status {got['status']}, "
                 f"Content-Length {got['content_length']}, received {got['received']} bytes with digest "
                 f"{got['digest']}, transfer error {got['error']}, body {got['snippet'][:200]!r}")
        print(shown)
        assert not (got["error"] or "").startswith("timeout"), (
            f"the download was neither completed nor aborted: the downstream kept the connection open. {shown}"
            f"{context()}")
        assert not (got["status"] == 200 and got["received"] == CORRUPT_LAYER_SIZE), (
            f"the client received a complete {CORRUPT_LAYER_SIZE}-byte body for {layer} although the upstream's "
            f"bytes do not match it. {shown}{context()}")
        assert got["digest"] != layer or got["received"] != CORRUPT_LAYER_SIZE, shown
        if got["status"] == 200:
            assert got["error"] is not None or got["received"] < CORRUPT_LAYER_SIZE, shown

    # Nothing was cached: the second GET went upstream again, and no file holds the digest.
    log = settled_log(up.reg)
    gets = upstream_fetches(log, "GET", upstream_path)
    assert len(gets) - baseline == 2, (
        f"two GETs through the cache of a blob whose upstream bytes are corrupt should each fetch it upstream "
        f"once (nothing may be cached); the upstream answered {len(gets) - baseline} GETs of {upstream_path}:"
        f"{show_log(log, '/lib/corrupt/')}")
    cached = blob_files(down.reg.data_dir, layer)
    assert cached == [], f"the downstream stored the corrupt blob {layer}: {cached}"

    _, raw = metrics(down.reg)
    misses_after = labeled_value(raw, "berth_proxy_misses_total", 'kind="blob"')
    assert misses_after - misses_before == 2, (
        f'berth_proxy_misses_total{{kind="blob"}} went {misses_before:g} -> {misses_after:g} over two GETs of '
        f"a blob that cannot be cached (expected +2):\n  {metric_lines(raw, 'berth_proxy_')}")


# --- 2. Docker registry-mirrors listener -------------------------------------------------------------


MIRROR_PROJECT = "hub"


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


class MirrorSetup:
    def __init__(self, tmp: Path):
        # Upstream: project `library` (private; the proxy pulls as `puller`) with library/mirrortest:1.
        self.up: Upstream = start_upstream(tmp / "upstream", names=())
        self.down = None
        try:
            admin = Admin(self.up.reg.url, self.up.admin)
            admin.create_project("library", public=False)
            admin.set_member("library", self.up.puller[0], "developer")
            self.image = PlatformImage(architecture=host_arch(), layer_tars=[random_tar()])
            client = Client(self.up.reg.url, basic=self.up.admin)
            for blob in (self.image.config, *self.image.layers):
                r = push_blob(client, "library/mirrortest", blob.data)
                assert r.status_code == 201, f"upstream: push blob {blob.digest}: {describe(r)}"
            r = client.put("/v2/library/mirrortest/manifests/1", data=self.image.manifest.data,
                           headers={"Content-Type": OCI_MANIFEST}, timeout=TIMEOUT)
            assert r.status_code == 201, f"upstream: push manifest library/mirrortest:1: {describe(r)}"

            # Downstream: proxy project `hub` for that upstream, served on the mirror listener too.
            self.mirror_port = free_port()
            self.mirror_url = f"http://127.0.0.1:{self.mirror_port}"
            down_tmp = tmp / "downstream"
            down_tmp.mkdir(parents=True)
            config = down_tmp / "berth.toml"
            config.write_text(
                "[proxy]\n"
                f"mirror_listen = {toml_str(f'127.0.0.1:{self.mirror_port}')}\n"
                f"mirror_project = {toml_str(MIRROR_PROJECT)}\n"
                "\n[[proxy.projects]]\n"
                f"name = {toml_str(MIRROR_PROJECT)}\n"
                f"upstream = {toml_str(self.up.reg.url)}\n"
                f"username = {toml_str(self.up.puller[0])}\n"
                f"password = {toml_str(self.up.puller[1])}\n"
                "public = true\n"
                'tag_freshness = "2s"\n'
            )
            self.down = start_berth(down_tmp, ["--config", str(config)],
                                    env={"BERTH_ADMIN_PASSWORD": secrets.token_urlsafe(24),
                                         "BERTH_LOG__FORMAT": "json"})
            try:
                wait_http(self.mirror_url + "/v2/", timeout=30)
            except OSError:
                pytest.fail(f"the mirror listener {self.mirror_url} never answered{log_tail(self.down.log_path)}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.down is not None:
            stop_berth(self.down)
        stop_berth(self.up.reg)


@pytest.fixture
def mirror_setup(tmp_path):
    setup = MirrorSetup(tmp_path)
    yield setup
    setup.stop()


class MirrorDocker:
    """dockerd as in tests/e2e/clients/conftest.py's `Docker` (own data root, private mount
    namespace, the given containerd), with `registry-mirrors` naming the mirror listener."""

    def __init__(self, containerd, work: Path, mirror_host: str):
        from clients.conftest import Daemon, log_tail as daemon_tail, run, sandboxed

        self._run, self._tail = run, daemon_tail
        dockerd = require_tool("dockerd")
        self.binary = require_tool("docker")
        home = work / "docker"
        home.mkdir(parents=True)
        self.socket = home / "docker.sock"
        config = home / "daemon.json"
        config.write_text(json.dumps({
            "data-root": str(home / "data"),
            "exec-root": str(home / "exec"),
            "pidfile": str(home / "dockerd.pid"),
            "hosts": [f"unix://{self.socket}"],
            "containerd": containerd.address,
            "registry-mirrors": [f"http://{mirror_host}"],
            "insecure-registries": [mirror_host],
            "iptables": False,
            "ip6tables": False,
            "bridge": "none",
            "ip-forward": False,
            "ip-masq": False,
            "userland-proxy": False,
        }))
        (home / "client").mkdir()
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(home / "client"),
            "DOCKER_BUILDKIT": "0",
            "DOCKER_CLI_HINTS": "false",
        }
        self.daemon = Daemon("dockerd", sandboxed([dockerd, "--config-file", str(config)], home / "sandbox"),
                             home / "dockerd.log", env=self.env)
        self.daemon.wait_until(
            lambda: self.socket.exists() and self("version", check=False, timeout=10).returncode == 0
        )

    def __call__(self, *args: str, **kwargs):
        kwargs.setdefault("context", lambda: self._tail(self.daemon.log_path, 20))
        return self._run([self.binary, *args], env=self.env, **kwargs)

    def stop(self) -> None:
        self.daemon.stop()


def test_the_mirror_listener_serves_only_the_registry_api_and_the_token_endpoint(mirror_setup):
    """Finding 13: the Docker mirror listener served the admin API too; it serves `/v2` and the
    token endpoint only."""
    setup = mirror_setup
    admin = setup.down.creds
    for path in ("/api/v1/projects", "/api/v1/users", "/api/v1/openapi.json", "/metrics"):
        r = requests.get(setup.mirror_url + path, auth=admin, timeout=TIMEOUT)
        assert r.status_code == 404, f"GET {path} on the mirror listener: {describe(r)}"
    assert requests.get(setup.mirror_url + "/v2/", auth=admin, timeout=TIMEOUT).status_code == 200
    r = requests.get(setup.mirror_url + "/auth/token", params={"service": "berth"}, auth=admin, timeout=TIMEOUT)
    assert r.status_code == 200 and "token" in r.json(), describe(r)
    # The main listener still serves the admin API.
    assert requests.get(setup.down.url + "/api/v1/projects", auth=admin, timeout=TIMEOUT).status_code == 200


@pytest.fixture
def mirror_docker(containerd, mirror_setup):
    # A short path of its own: dockerd's unix sockets under exec-root must fit in 108 bytes.
    work = Path(tempfile.mkdtemp(prefix="berth-mirror-"))
    try:
        daemon = MirrorDocker(containerd, work, f"127.0.0.1:{mirror_setup.mirror_port}")
        yield daemon
        daemon.stop()
    finally:
        if os.environ.get("CLIENTS_KEEP_STATE") != "1":
            shutil.rmtree(work, ignore_errors=True)


def test_docker_registry_mirrors_listener(mirror_setup, mirror_docker):
    setup, docker = mirror_setup, mirror_docker
    image = setup.image
    context = lambda: (log_tail(docker.daemon.log_path, 20) + log_tail(setup.down.log_path, 20)
                       + f"\nupstream requests:{show_log(setup.up.log(), '/library/')}")

    docker("pull", "mirrortest:1", timeout=180, context=context)
    image_id = docker("image", "inspect", "--format", "{{.Id}}", "mirrortest:1", context=context).stdout.strip()
    assert image_id == image.config.digest, (
        f"docker pulled mirrortest:1 as {image_id}; the upstream's library/mirrortest:1 has config "
        f"{image.config.digest} (manifest {image.manifest.digest}){context()}")

    repos = catalog(Client(setup.down.url, basic=setup.down.creds))
    assert f"{MIRROR_PROJECT}/library/mirrortest" in repos, (
        f"after docker pulled through the mirror, the downstream's catalog (as admin) is {repos}, without "
        f"{MIRROR_PROJECT}/library/mirrortest{log_tail(setup.down.log_path, 20)}")
    log = setup.up.log()
    assert upstream_fetches(log, "GET", f"/v2/library/mirrortest/blobs/{image.layers[0].digest}"), (
        f"the upstream never served the layer of library/mirrortest:{show_log(log, '/library/')}")

    # The mirror listener serves only the mirror project: a local repository is not reachable there.
    # /v2/team/app there means hub/team/app, i.e. team/app upstream, where the project `team`
    # exists (the proxy's user may read it) but holds no team/app: the upstream answers 404.
    up_admin = Admin(setup.up.reg.url, setup.up.admin)
    up_admin.create_project("team", public=False)
    up_admin.set_member("team", setup.up.puller[0], "developer")
    admin = setup.down.creds
    Admin(setup.down.url, admin).create_project("team", public=False)
    local = push_image(Client(setup.down.url, basic=admin), "team/app", "1")
    r = Client(setup.down.url, basic=admin).get("/v2/team/app/manifests/1", headers={"Accept": OCI_MANIFEST},
                                                  timeout=TIMEOUT)
    assert r.status_code == 200 and sha256(r.content) == local.digest, (
        f"team/app:1 was just pushed to the downstream's main port: {describe(r)}")
    for who, client in (("the downstream's admin (Basic)", Client(setup.mirror_url, basic=admin)),
                        ("an anonymous client", AutoClient(setup.mirror_url, None))):
        r = client.get("/v2/team/app/manifests/1", headers={"Accept": OCI_MANIFEST}, timeout=TIMEOUT)
        assert r.status_code == 404, (
            f"GET {setup.mirror_url}/v2/team/app/manifests/1 on the mirror listener as {who} means "
            f"{MIRROR_PROJECT}/team/app (absent upstream): expected 404, got {describe(r)}"
            f"{' — the local team/app:1 was served' if sha256(r.content) == local.digest else ''}"
            f"{log_tail(setup.down.log_path, 10)}")
    log = setup.up.log()
    asked = [e for e in log if e.path == "/v2/team/app/manifests/1" and e.status != 401]
    assert asked and all(e.status == 404 for e in asked), (
        f"the mirror listener's GETs of /v2/team/app/manifests/1 should have gone to the upstream as "
        f"team/app (404 there):{show_log(log, '/team/')}")
