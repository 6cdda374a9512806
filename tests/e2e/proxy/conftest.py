"""Fixtures for the pull-through cache suite (docs/proxy.md): one berth caching another.

- The **upstream** is a `berth serve` with auth on (admin password in BERTH_ADMIN_PASSWORD) and
  JSON logs (BERTH_LOG__FORMAT=json), so every request it answers is one parseable log line
  (`{"message": "request" | "request failed", "status": …, "span": {"method": …, "path": …}}`):
  the tests count what the cache asked it. Its admin creates the private project `lib` and the user `puller`
  (developer of `lib`), then pushes `lib/small:1` (one 1 KiB layer), `lib/big:1` (one 64 MiB
  random layer), `lib/multi:1` (an OCI index over linux/amd64 and linux/arm64 images with real
  gzip tar layers, so containerd can unpack them), `lib/gone:1`, `lib/metrics:1` and
  `lib/limited:1` (never pulled but by the tests that need an uncached tag).
- The **downstream** (the cache) is a `berth serve --config FILE` whose FILE declares the proxy
  project `up` for that upstream (credentials of `puller`, `public = true`, `tag_freshness =
  "2s"`, `namespace = "127.0.0.1:<upstream port>"` for containerd's `?ns=`), with its own admin.
- `containerd`: containerd in a private mount namespace (tests/e2e/clients/conftest.py's
  `Containerd`), driven with `ctr`; needs root.
- `Nginx`: Debian's nginx as a reverse proxy in front of an upstream, with its whole state in a
  temporary directory (`nginx -p PREFIX -c CONF -e ERRLOG`), reloaded (`-s reload`) to switch
  between no limit, a 429 for every /v2/ request, and a 429 for every /v2/ request but HEADs.

Every berth started here keeps its log in `<tmp>/berth.log` (see tests/e2e/conftest.py); failure
messages show the requests the upstream logged.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from auth.helpers import OCI_MANIFEST, Admin, Client, push_blob, random_image, sha256
from auth.helpers import Image as SmallImage
from clients.images import OCI_INDEX, Image as PlatformImage, Index, random_tar
from conftest import IN_CI, Registry, free_port, require_tool, start_berth, stop_berth

TIMEOUT = (10, 120)  # (connect, read) seconds for every request of this suite
PROXY_PROJECT = "up"
TAG_FRESHNESS = 2.0  # seconds; the `tag_freshness` of every downstream here
BIG_LAYER_SIZE = 64 * 1024 * 1024
ACCEPT_MANIFESTS = ", ".join([
    OCI_INDEX,
    OCI_MANIFEST,
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


# --- what the tests push and expect back ---------------------------------------------------------


@dataclass
class Pushed:
    """An artifact pushed to the upstream: its root manifest and every blob under it (for an
    index: the child manifests and their configs and layers)."""

    repo: str  # upstream repository, e.g. lib/small
    tag: str
    manifest: bytes
    media_type: str
    blobs: dict[str, bytes] = field(repr=False)
    layers: list[str] = field(default_factory=list)  # layer digests of a single-platform image
    children: dict[str, PlatformImage] = field(default_factory=dict, repr=False)  # index: digest -> image

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def proxied(self) -> str:
        """The repository in the downstream: up/<repo>."""
        return f"{PROXY_PROJECT}/{self.repo}"


def _push_manifest(client: Client, repo: str, reference: str, data: bytes, media_type: str) -> None:
    r = client.put(f"/v2/{repo}/manifests/{reference}", data=data, headers={"Content-Type": media_type},
                   timeout=TIMEOUT)
    assert r.status_code == 201, f"upstream: push manifest {repo}:{reference}: {describe(r)}"


def _push_blobs(client: Client, repo: str, blobs: dict[str, bytes]) -> None:
    for digest, data in blobs.items():
        r = push_blob(client, repo, data)
        assert r.status_code == 201, f"upstream: push blob {digest} ({len(data)} bytes) to {repo}: {describe(r)}"


def push_simple(client: Client, repo: str, tag: str, image: SmallImage) -> Pushed:
    _push_blobs(client, repo, image.blobs)
    _push_manifest(client, repo, tag, image.manifest, OCI_MANIFEST)
    return Pushed(repo, tag, image.manifest, OCI_MANIFEST, dict(image.blobs), layers=[image.layer_digest])


def push_index(client: Client, repo: str, tag: str) -> Pushed:
    images = [PlatformImage(architecture="amd64", layer_tars=[random_tar()]),
              PlatformImage(architecture="arm64", layer_tars=[random_tar()])]
    index = Index(images)
    blobs: dict[str, bytes] = {}
    for img in images:
        own = {b.digest: b.data for b in (img.config, *img.layers)}
        _push_blobs(client, repo, own)
        _push_manifest(client, repo, img.manifest.digest, img.manifest.data, OCI_MANIFEST)
        blobs[img.manifest.digest] = img.manifest.data
        blobs.update(own)
    _push_manifest(client, repo, tag, index.manifest.data, OCI_INDEX)
    return Pushed(repo, tag, index.manifest.data, OCI_INDEX, blobs,
                  children={img.manifest.digest: img for img in images})


def big_image() -> SmallImage:
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": []},
                         "e2e": secrets.token_hex(8)}).encode()
    return SmallImage(config=config, layer=os.urandom(BIG_LAYER_SIZE))


# --- the upstream's request log -------------------------------------------------------------------


@dataclass(frozen=True)
class Logged:
    method: str
    path: str  # without the query
    status: int | None

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status}"


def request_log(reg: Registry) -> list[Logged]:
    """Every request a berth started with BERTH_LOG__FORMAT=json logged, in order."""
    out = []
    if reg.log_path is None or not reg.log_path.exists():
        return out
    for line in reg.log_path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        # One line per answered request: "request", or "request failed" for a 5xx; other lines
        # inside a request's span carry its method and path too, but no status.
        if not isinstance(rec, dict) or not str(rec.get("message", "")).startswith("request"):
            continue
        span = rec.get("span") or {}
        fields = rec.get("fields") or {}
        method = span.get("method") or rec.get("method") or fields.get("method")
        path = span.get("path") or rec.get("path") or fields.get("path") or ""
        status = rec.get("status", fields.get("status"))
        if method is None or status is None:
            continue
        out.append(Logged(str(method), str(path).split("?", 1)[0], int(status)))
    return out


def settled_log(reg: Registry, quiet: float = 0.7, timeout: float = 10.0) -> list[Logged]:
    """`request_log` once it stopped growing for `quiet` seconds (a request is logged when its
    answer ends, which may trail the client's view a little)."""
    deadline = time.monotonic() + timeout
    last = request_log(reg)
    while True:
        time.sleep(quiet)
        now = request_log(reg)
        if len(now) == len(last) or time.monotonic() > deadline:
            return now
        last = now


def upstream_fetches(log: list[Logged], method: str, path: str) -> list[Logged]:
    """Requests `method path` in `log` that were not just a 401 challenge (the bearer dance answers
    the first try of a new scope with 401, then the same request comes again with a token)."""
    return [e for e in log if e.method == method and e.path == path and e.status != 401]


def show_log(log: list[Logged], contains: str = "/v2/", limit: int = 60) -> str:
    rows = [str(e) for e in log if contains in e.path]
    more = f"\n  … {len(rows) - limit} more" if len(rows) > limit else ""
    return "\n  " + "\n  ".join(rows[-limit:]) + more if rows else " (none)"


# --- responses, metrics --------------------------------------------------------------------------


def describe(r: requests.Response, limit: int = 400) -> str:
    """`<status> <body snippet>` of an answer, for failure messages."""
    body = r.text if r.content is not None else ""
    if len(body) > limit:
        body = body[:limit] + "…"
    return f"{r.request.method} {r.url} -> {r.status_code} {body!r}"


def oci_errors(r: requests.Response) -> list[dict] | None:
    """The `errors` list of an OCI error body, or None when the body is no such JSON."""
    try:
        body = r.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return None
    return body["errors"]


_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metrics(reg: Registry, creds: tuple[str, str] | None = None) -> tuple[dict[str, float], str]:
    """({metric name: sum over its label sets}, raw text) of GET /metrics."""
    r = requests.get(reg.url + "/metrics", auth=creds, timeout=TIMEOUT)
    if r.status_code == 401 and creds is None and reg.creds:
        r = requests.get(reg.url + "/metrics", auth=reg.creds, timeout=TIMEOUT)
    assert r.status_code == 200, f"GET /metrics: {describe(r)}"
    sums: dict[str, float] = {}
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC_LINE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        sums[m.group(1)] = sums.get(m.group(1), 0.0) + value
    return sums, r.text


def metric_lines(text: str, prefix: str) -> str:
    return "\n  ".join(line for line in text.splitlines() if line.startswith(prefix)) or "(no such series)"


def log_tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {path} ---\n" + "\n".join(tail)


# --- upstream and downstream berths --------------------------------------------------------------


@dataclass
class Upstream:
    reg: Registry
    puller: tuple[str, str]
    images: dict[str, Pushed]

    @property
    def admin(self) -> tuple[str, str]:
        return self.reg.creds

    def log(self) -> list[Logged]:
        return settled_log(self.reg)


def start_upstream(tmp: Path, names=("small", "big", "multi", "gone", "metrics", "limited")) -> Upstream:
    """An authenticated berth with project `lib` (private), user `puller` (developer of lib) and
    the images `names` pushed as lib/<name>:1."""
    tmp.mkdir(parents=True, exist_ok=True)
    admin_password = secrets.token_urlsafe(24)
    reg = start_berth(tmp, env={"BERTH_ADMIN_PASSWORD": admin_password, "BERTH_LOG__FORMAT": "json"})
    try:
        admin = Admin(reg.url, reg.creds)
        puller = ("puller", secrets.token_urlsafe(24))
        admin.create_user(*puller)
        admin.create_project("lib", public=False)
        admin.set_member("lib", "puller", "developer")
        client = Client(reg.url, basic=reg.creds)
        images: dict[str, Pushed] = {}
        for name in names:
            repo = f"lib/{name}"
            if name == "multi":
                images[name] = push_index(client, repo, "1")
            elif name == "big":
                images[name] = push_simple(client, repo, "1", big_image())
            else:
                images[name] = push_simple(client, repo, "1", random_image())
    except BaseException:
        stop_berth(reg)
        raise
    return Upstream(reg, puller, images)


def toml_str(value: str) -> str:
    return json.dumps(value)  # a TOML basic string for these plain values


def proxy_config(upstream_url: str, namespace: str, creds: tuple[str, str], tag_freshness: str = "2s",
                 **extra: str) -> str:
    lines = [
        "[[proxy.projects]]",
        f"name = {toml_str(PROXY_PROJECT)}",
        f"upstream = {toml_str(upstream_url)}",
        f"namespace = {toml_str(namespace)}",
        f"username = {toml_str(creds[0])}",
        f"password = {toml_str(creds[1])}",
        "public = true",
        f"tag_freshness = {toml_str(tag_freshness)}",
    ]
    lines += [f"{k} = {toml_str(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Downstream:
    reg: Registry
    config_path: Path

    @property
    def url(self) -> str:
        return self.reg.url

    @property
    def admin(self) -> tuple[str, str]:
        return self.reg.creds


def start_downstream(tmp: Path, upstream_url: str, namespace: str, creds: tuple[str, str]) -> Downstream:
    """The cache: a berth whose config declares the proxy project `up` for `upstream_url`."""
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "berth.toml"
    config.write_text(proxy_config(upstream_url, namespace, creds, f"{TAG_FRESHNESS:g}s"))
    reg = start_berth(
        tmp,
        ["--config", str(config)],
        env={"BERTH_ADMIN_PASSWORD": secrets.token_urlsafe(24), "BERTH_LOG__FORMAT": "json"},
    )
    if reg.proc.poll() is not None:
        pytest.fail(f"the downstream berth exited at once with {reg.proc.returncode}{log_tail(reg.log_path)}")
    return Downstream(reg, config)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    up = start_upstream(tmp_path_factory.mktemp("upstream"))
    yield up
    stop_berth(up.reg)


@pytest.fixture(scope="module")
def downstream(tmp_path_factory, upstream):
    down = start_downstream(tmp_path_factory.mktemp("downstream"), upstream.reg.url, upstream.reg.host,
                            upstream.puller)
    yield down
    stop_berth(down.reg)


# --- containerd ----------------------------------------------------------------------------------


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        message = f"{what} needs root (containerd in a private mount namespace)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def containerd(tmp_path_factory):
    """containerd with all its state in a temporary directory, as in tests/e2e/clients."""
    require_root("the containerd mirror test")
    require_tool("containerd")
    require_tool("ctr")
    require_tool("unshare")
    from clients.conftest import Containerd

    daemon = Containerd(None, tmp_path_factory.mktemp("containerd-work"))
    yield daemon
    daemon.stop()


# --- nginx ---------------------------------------------------------------------------------------

RATE_LIMIT_MARKER = "nginx-e2e-rate-limit"
RETRY_AFTER = "42"


LIMITS = {
    "off": "",
    # every /v2/ request but the first one a minute
    "all": "limit_req zone=e2e_all;",
    # the same for every /v2/ request but HEADs (each limit has a zone of its own, so switching
    # to it starts afresh: its first request passes)
    "not-head": "limit_req zone=e2e_not_head;",
}


def nginx_conf(prefix: Path, port: int, upstream_port: int, limited: str, generation: int) -> str:
    """A reverse proxy on 127.0.0.1:`port` to the upstream, /v2/ limited as LIMITS[`limited`]
    says: a request over the limit answers 429 with an OCI error body naming RATE_LIMIT_MARKER
    (a HEAD gets no body) and `Retry-After: 42`. The token endpoint is never limited.
    GET /e2e-generation answers `generation`: which config the answering worker runs."""
    user = "user root root;\n" if os.geteuid() == 0 else ""
    limit = LIMITS[limited]
    body = json.dumps({"errors": [{"code": "TOOMANYREQUESTS",
                                   "message": f"{RATE_LIMIT_MARKER}: slow down, 1 request per minute"}]})
    return f"""
daemon off;
master_process on;
worker_processes 1;
{user}pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    map $request_method $e2e_not_head_key {{
        HEAD "";
        default $binary_remote_addr;
    }}
    limit_req_zone $binary_remote_addr zone=e2e_all:1m rate=1r/m;
    limit_req_zone $e2e_not_head_key zone=e2e_not_head:1m rate=1r/m;
    limit_req_status 429;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        proxy_http_version 1.1;
        proxy_buffering off;
        proxy_request_buffering off;
        proxy_read_timeout 300s;
        proxy_set_header Host $http_host;
        location /v2/ {{
            {limit}
            error_page 429 = @ratelimited;
            proxy_pass http://127.0.0.1:{upstream_port};
        }}
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
        }}
        location = /e2e-generation {{
            default_type text/plain;
            return 200 "{generation}";
        }}
        location @ratelimited {{
            default_type application/json;
            add_header Retry-After {RETRY_AFTER} always;
            return 429 '{body}';
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground with everything under `prefix`; `reload` swaps its config."""

    def __init__(self, prefix: Path, upstream_port: int):
        from clients.conftest import Daemon

        self.binary = require_tool("nginx")
        self.prefix = prefix
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        self.error_log = prefix / "error.log"
        self.port = free_port()
        self.upstream_port = upstream_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.generation = 1
        self.conf.write_text(nginx_conf(prefix, self.port, upstream_port, "off", self.generation))
        self._check_config()
        self.daemon = Daemon("nginx", self._argv(), prefix / "nginx.stdout")
        self.daemon.wait_until(self._answers, timeout=30)

    def _argv(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(self.conf), "-e", str(self.error_log), *extra]

    def _check_config(self) -> None:
        p = subprocess.run(self._argv("-t"), capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, f"nginx -t refused {self.conf}:\n{p.stderr}\n{self.conf.read_text()}"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def reload(self, limited: str) -> None:
        """Switch to the limit LIMITS[`limited`]: reload, wait until new connections reach workers
        of the new config (old workers answer a little longer), then spend the one GET the limit
        lets through and see the next one answer 429."""
        self.generation += 1
        self.conf.write_text(nginx_conf(self.prefix, self.port, self.upstream_port, limited, self.generation))
        self._check_config()
        p = subprocess.run(self._argv("-s", "reload"), capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, f"nginx -s reload: {p.returncode} {p.stderr}{log_tail(self.error_log)}"
        deadline = time.monotonic() + 20
        answers = []
        while True:
            r = requests.get(f"{self.url}/e2e-generation", timeout=TIMEOUT)
            answers.append(r.text)
            if all(a == str(self.generation) for a in answers[-5:]) and len(answers) >= 5:
                break
            assert time.monotonic() < deadline, (
                f"nginx still runs an old config 20 s after the reload to generation {self.generation}: "
                f"{answers[-10:]}{log_tail(self.error_log)}")
            time.sleep(0.1)
        if limited == "off":
            return
        deadline = time.monotonic() + 20
        seen = []
        while True:
            r = requests.get(f"{self.url}/v2/", timeout=TIMEOUT)
            seen.append(r.status_code)
            if r.status_code == 429:
                assert RATE_LIMIT_MARKER in r.text, f"nginx's 429 lacks the marker: {describe(r)}"
                return
            assert time.monotonic() < deadline, f"nginx never answered 429 after the reload to {limited}: {seen}"
            time.sleep(0.2)

    def stop(self) -> None:
        self.daemon.stop()
