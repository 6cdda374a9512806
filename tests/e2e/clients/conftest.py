"""Fixtures that run real container clients against the registry under test.

Run as root (containerd, dockerd and the mount namespaces below need it), after
scripts/install-test-deps.sh:

    .venv/bin/pytest tests/e2e/clients -v                  # starts target/debug/berth (auth on)
    BERTH_E2E_AUTH=off .venv/bin/pytest tests/e2e/clients -v   # the same, with berth --no-auth
    REGISTRY_URL=http://127.0.0.1:5000 .venv/bin/pytest tests/e2e/clients -v   # any registry

CLIENTS_KEEP_STATE=1 keeps the session's directory (daemon logs, client configs) for a look
after a failure; its path is printed at the end.

Every daemon and tool keeps its state in one temporary directory per session (`work_dir`):
containerd (config, root, state, socket), dockerd on top of it (data-root, exec-root, socket,
client config), podman (storage, runroot, containers.conf, registries.conf, auth file) and skopeo.
Daemons are stopped at teardown and the directory is removed.

Some of these programs write outside any directory they are given when they run as root
(skopeo and podman keep a blob-info cache in /var/lib/containers/cache, dockerd makes
/run/docker/plugins, containerd makes /opt/containerd). So, as root, each of them runs in a
private mount namespace in which /run, /var/lib, /var/tmp, /etc/docker, /etc/containers and
/opt are overlays whose writable layer is under `work_dir`: the machine's own files are read as
they are but never written. The overlay layer of a tool persists for the session, so skopeo's
blob-info cache remembers, from one skopeo run to the next, which repository a blob was pushed
to; that is what makes a later copy to another repository try a cross-repository mount.

Credentials: when `registry.creds` is set, every client is given them (skopeo --*-creds, ctr
--user, docker/podman login into their own temporary auth files, oras basic auth).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest
import requests

from .api import RegistryAPI


def _e2e_conftest():
    """tests/e2e/conftest.py (shared `registry` fixture and `require_tool`), as pytest loaded it."""
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    loaded = sys.modules.get("conftest")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path:
        return loaded
    spec = importlib.util.spec_from_file_location("berth_e2e_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_E2E = _e2e_conftest()
require_tool = _E2E.require_tool


def require_module(name: str):
    """A Python module of tests/e2e/requirements.txt; missing, it fails under CI=true, else skips."""
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"Python module {name} is missing (scripts/install-test-deps.sh installs it)"
        if _E2E.IN_CI:
            pytest.fail(message)
        pytest.skip(message)


DEFAULT_TIMEOUT = 120
# Strings never shown in a failure message (the registry password, added by `_mask_password`).
SECRETS: set[str] = set()

SANDBOX_DIRS = ["/run", "/var/lib", "/var/tmp", "/etc/docker", "/etc/containers", "/opt"]
# `mount -n`: do not record the mounts in /run/mount/utab (that would write to the real /run).
SANDBOX_SCRIPT = r"""
set -e
state="$1"; shift
for d in %s; do
  [ -d "$d" ] || continue
  n=$(printf %%s "$d" | tr / _)
  mkdir -p "$state/$n/upper" "$state/$n/work"
  mount -n -t overlay overlay -o "lowerdir=$d,upperdir=$state/$n/upper,workdir=$state/$n/work" "$d"
done
exec "$@"
""" % " ".join(SANDBOX_DIRS)


def sandboxed(argv: list[str], state_dir: Path) -> list[str]:
    """`argv` run in a private mount namespace whose writes to system directories land in
    `state_dir` (see the module docstring). Without root nothing there is writable anyway."""
    if os.geteuid() != 0:
        return argv
    unshare = require_tool("unshare")
    state_dir.mkdir(parents=True, exist_ok=True)
    return [unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-c", SANDBOX_SCRIPT, "sandbox",
            str(state_dir), *argv]


def _text(data) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data


def run(
    argv: list[str],
    *,
    env: dict | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    input: str | bytes | None = None,
    check: bool = True,
    binary: bool = False,
    cwd: Path | None = None,
    shown: list[str] | None = None,
    context: Callable[[], str] | None = None,
) -> subprocess.CompletedProcess:
    """Run a command with a timeout; with `check`, a non-zero exit fails the test with its output
    (and with `context()`, for example the tail of the daemon's log)."""
    shown_cmd = shlex.join(shown or argv)
    if isinstance(input, str) and binary:
        input = input.encode()
    try:
        proc = subprocess.run(
            argv, env=env, input=input, capture_output=True, timeout=timeout, text=not binary, cwd=cwd,
        )
    except subprocess.TimeoutExpired as e:
        _fail(f"timed out after {timeout}s: {shown_cmd}", e.stdout, e.stderr, context)
    if check and proc.returncode != 0:
        _fail(f"exit status {proc.returncode}: {shown_cmd}", proc.stdout, proc.stderr, context)
    return proc


def _fail(what: str, stdout, stderr, context: Callable[[], str] | None) -> None:
    message = f"{what}\nstdout:\n{_text(stdout)[-3000:]}\nstderr:\n{_text(stderr)[-3000:]}"
    if context:
        message += context()
    for secret in SECRETS:
        message = message.replace(secret, "***")
    pytest.fail(message)


def log_tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return ""
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {path} ---\n" + "\n".join(tail)


def creds_arg(creds: tuple[str, str] | None) -> str | None:
    return f"{creds[0]}:{creds[1]}" if creds else None


class Daemon:
    """A background process started for the session, stopped (TERM, then KILL) at teardown."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict | None = None):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)

    def wait_until(self, ready, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode} while starting{log_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{self.name} did not become ready in {timeout}s{log_tail(self.log_path)}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log.close()


# --- basic fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def work_dir(request):
    """The session's temporary directory; CLIENTS_KEEP_STATE=1 keeps it (with the daemons' logs)."""
    path = Path(tempfile.mkdtemp(prefix="berth-clients-"))
    yield path
    if os.environ.get("CLIENTS_KEEP_STATE") == "1":
        with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
            print(f"\nclient state and logs kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _mask_password(registry):
    if registry.creds:
        SECRETS.add(registry.creds[1])


@pytest.fixture(scope="session")
def api(registry) -> RegistryAPI:
    return RegistryAPI(registry.url, registry.creds)


@pytest.fixture
def repo(request) -> str:
    """A repository name no other test uses: clients/<test name>-<random>."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_")).strip("-")[:40]
    return f"clients/{name}-{uuid.uuid4().hex[:10]}"


# --- skopeo --------------------------------------------------------------------------------------


class Skopeo:
    def __init__(self, registry, work: Path):
        self.registry = registry
        self.binary = require_tool("skopeo")
        self.home = work / "skopeo"
        (self.home / "tmp").mkdir(parents=True, exist_ok=True)
        auth_file = self.home / "auth.json"
        auth_file.write_text('{"auths": {}}')
        self.env = {**os.environ, "REGISTRY_AUTH_FILE": str(auth_file), "TMPDIR": str(self.home / "tmp")}

    def ref(self, repo: str, reference: str = "") -> str:
        """docker://HOST/REPO:TAG or docker://HOST/REPO@DIGEST (or just the repository)."""
        sep = "" if not reference else ("@" if reference.startswith("sha256:") else ":")
        return f"docker://{self.registry.host}/{repo}{sep}{reference}"

    def registry_flags(self, prefix: str = "") -> list[str]:
        flags = [f"--{prefix}tls-verify=false"]
        if self.registry.creds:
            flags += [f"--{prefix}creds", creds_arg(self.registry.creds)]
        return flags

    def __call__(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        argv = [self.binary, "--tmpdir", str(self.home / "tmp"), *args]
        return run(sandboxed(argv, self.home / "sandbox"), env=self.env, shown=argv, **kwargs)

    def copy(self, src: str, dest: str, *extra: str, **kwargs) -> subprocess.CompletedProcess:
        flags = list(extra)
        if src.startswith("docker://"):
            flags += self.registry_flags("src-")
        if dest.startswith("docker://"):
            flags += self.registry_flags("dest-")
        return self("copy", *flags, src, dest, **kwargs)

    def on_registry(self, command: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """A skopeo command that talks to the registry only (inspect, list-tags, delete)."""
        return self(command, *self.registry_flags(""), *args, **kwargs)


@pytest.fixture(scope="session")
def skopeo(registry, work_dir) -> Skopeo:
    return Skopeo(registry, work_dir)


# --- containerd ----------------------------------------------------------------------------------


class Containerd:
    def __init__(self, registry, work: Path):
        self.registry = registry
        containerd = require_tool("containerd")
        self.ctr_binary = require_tool("ctr")
        home = work / "containerd"
        home.mkdir(parents=True)
        self.address = str(home / "containerd.sock")
        config = home / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{home}/root"\n'
            f'state = "{home}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{self.address}"\n'
            "[ttrpc]\n"
            f'  address = "{self.address}.ttrpc"\n'
            '[plugins."io.containerd.internal.v1.opt"]\n'
            f'  path = "{home}/opt"\n'
        )
        argv = [containerd, "--config", str(config)]
        self.daemon = Daemon("containerd", sandboxed(argv, home / "sandbox"), home / "containerd.log")
        self.daemon.wait_until(
            lambda: os.path.exists(self.address)
            and self.ctr("default", "version", check=False, timeout=10).returncode == 0
        )

    def ctr(self, namespace: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
        argv = [self.ctr_binary, "--address", self.address, "--namespace", namespace, *args]
        kwargs.setdefault("context", lambda: log_tail(self.daemon.log_path, 20))
        return run(argv, **kwargs)

    def registry_flags(self) -> list[str]:
        """Flags of `ctr images pull|push` for the registry under test."""
        flags = ["--plain-http"] if self.registry.url.startswith("http://") else []
        if self.registry.creds:
            flags += ["--user", creds_arg(self.registry.creds)]
        return flags

    def stop(self) -> None:
        self.daemon.stop()


@pytest.fixture(scope="session")
def containerd(registry, work_dir):
    daemon = Containerd(registry, work_dir)
    yield daemon
    daemon.stop()


# --- dockerd -------------------------------------------------------------------------------------


class Docker:
    def __init__(self, registry, containerd: Containerd, work: Path):
        self.registry = registry
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
            "deprecated-key-path": str(home / "key.json"),
            "insecure-registries": [registry.host],
            "iptables": False,
            "ip6tables": False,
            "bridge": "none",
            "ip-forward": False,
            "ip-masq": False,
            "userland-proxy": False,
            "default-ulimits": {
                "nofile": {"Name": "nofile", "Hard": 1024, "Soft": 1024},
                "nproc": {"Name": "nproc", "Hard": 1024, "Soft": 1024},
            },
        }))
        (home / "client").mkdir()
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(home / "client"),
            "DOCKER_BUILDKIT": "0",
            "DOCKER_CLI_HINTS": "false",
        }
        argv = [dockerd, "--config-file", str(config)]
        self.daemon = Daemon("dockerd", sandboxed(argv, home / "sandbox"), home / "dockerd.log", env=self.env)
        self.daemon.wait_until(
            lambda: self.socket.exists() and self("version", check=False, timeout=10).returncode == 0
        )
        if registry.creds:
            user, password = registry.creds
            self("login", "--username", user, "--password-stdin", registry.host, input=password)

    def __call__(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("context", lambda: log_tail(self.daemon.log_path, 20))
        return run([self.binary, *args], env=self.env, **kwargs)

    def stop(self) -> None:
        self.daemon.stop()


@pytest.fixture(scope="session")
def dockerd(registry, containerd, work_dir):
    daemon = Docker(registry, containerd, work_dir)
    yield daemon
    daemon.stop()


# --- podman --------------------------------------------------------------------------------------


class Podman:
    def __init__(self, registry, work: Path):
        self.registry = registry
        self.binary = require_tool("podman")
        require_tool("runc")
        self.home = home = work / "podman"
        for d in ("root", "runroot", "tmp", "libpod-tmp", "networks"):
            (home / d).mkdir(parents=True, exist_ok=True)
        (home / "containers.conf").write_text(
            "[containers]\n"
            'netns = "host"\n'
            'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{home}/events.log"\n'
            'runtime = "runc"\n'
            f'tmp_dir = "{home}/libpod-tmp"\n'
            f'image_copy_tmp_dir = "{home}/tmp"\n'
            "[network]\n"
            f'network_config_dir = "{home}/networks"\n'
        )
        (home / "registries.conf").write_text(
            "unqualified-search-registries = []\n"
            "[[registry]]\n"
            f'location = "{registry.host}"\n'
            f"insecure = {'true' if registry.url.startswith('http://') else 'false'}\n"
        )
        (home / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{home}/root"\nrunroot = "{home}/runroot"\n'
        )
        (home / "auth.json").write_text('{"auths": {}}')
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(home / "containers.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(home / "registries.conf"),
            "CONTAINERS_STORAGE_CONF": str(home / "storage.conf"),
            "REGISTRY_AUTH_FILE": str(home / "auth.json"),
            "TMPDIR": str(home / "tmp"),
        }
        if registry.creds:
            user, password = registry.creds
            self("login", "--username", user, "--password-stdin", registry.host, input=password)

    def __call__(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        argv = [self.binary, "--root", str(self.home / "root"), "--runroot", str(self.home / "runroot"),
                "--storage-driver", "vfs", *args]
        return run(sandboxed(argv, self.home / "sandbox"), env=self.env, shown=argv, **kwargs)


@pytest.fixture(scope="session")
def podman(registry, work_dir) -> Podman:
    # podman runs no daemon: nothing to stop, its storage goes with work_dir.
    return Podman(registry, work_dir)


# --- oras ----------------------------------------------------------------------------------------


@pytest.fixture
def oras_client(registry, work_dir, monkeypatch):
    """An oras-py client for the registry, as its users run it, with its credentials when it
    has some.

    oras-py (0.2.x) with auth_backend="token" keeps one token and, on a 401 naming a scope that
    token lacks (`insufficient_scope`), retries with the same token instead of asking for a new
    one, so a push whose first request was a pull-scoped HEAD fails. Go oras, docker, podman,
    skopeo and containerd ask for a new token there. The workaround documented in the README is
    what this fixture does: auth_backend="basic" (Berth accepts Basic credentials on /v2/
    directly, which needs no token at all). The client is not patched.

    DOCKER_CONFIG points at an empty temporary directory so that oras-py reads no credentials
    from the machine's ~/.docker/config.json."""
    oras_provider = require_module("oras.provider")
    config_dir = work_dir / "oras-docker-config"
    config_dir.mkdir(exist_ok=True)
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    backend = "basic" if registry.creds else "token"
    client = oras_provider.Registry(
        hostname=registry.host, insecure=registry.url.startswith("http://"), auth_backend=backend
    )
    # oras-py sets no timeouts; its session (shared with its auth backend) gets one here.
    for scheme in ("http://", "https://"):
        client.session.mount(scheme, _TimeoutAdapter())
    if registry.creds:
        client.auth.set_basic_auth(*registry.creds)
    return client


class _TimeoutAdapter(requests.adapters.HTTPAdapter):
    def send(self, request, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = 60
        return super().send(request, **kwargs)
