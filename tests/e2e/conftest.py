"""Shared fixtures for the black-box suites: a real `berth` process (or any registry URL).

`registry` starts `berth serve` on a free loopback port with a fresh data directory, once per
test session. Authentication is on (berth's default) with `auth.auto_create_projects`: the
first start creates the registry admin `admin` (random password, BERTH_ADMIN_PASSWORD), which
then creates an ordinary user through the admin API. `registry.creds` carries that user's
credentials, so every suite runs as a user who is no admin: its first push to a project creates
the project, private, with the user as its project admin, and everything else goes through
that role and the token flow. Every suite must pass `registry.creds` to its clients. BERTH_E2E_AUTH=off starts it with `--no-auth`
instead (an open registry, `registry.creds` is None), so the same suites check both modes.

Set REGISTRY_URL=http://host:port to point the suites at a registry that is already running
instead (for example Distribution, to check a test itself); REGISTRY_USER and REGISTRY_PASSWORD
then carry its credentials, if it needs any. BERTH_BIN picks the binary (default:
target/debug/berth).

berth refuses unknown BERTH_* variables in its environment, so every berth process started here
gets `berth_env()`: this environment without the suite's own BERTH_E2E_* switches.
"""

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() == "true"
# BERTH_E2E_AUTH=off: the session's registry runs with --no-auth (see the module docstring).
AUTH = os.environ.get("BERTH_E2E_AUTH", "on").strip().lower() not in ("off", "0", "false", "no")
ADMIN_USER = "admin"
# BERTH_E2E_STORAGE=s3: the session's registry keeps its blobs in the S3 server at
# S3_TEST_ENDPOINT (scripts/s3-test-server.sh starts moto; bucket `berth-test`), each session
# under its own key prefix.
STORAGE = os.environ.get("BERTH_E2E_STORAGE", "filesystem").strip().lower()


def storage_env() -> dict:
    """Configuration (as BERTH_* variables) for the session's blob store."""
    if STORAGE == "filesystem":
        return {}
    if STORAGE != "s3":
        raise RuntimeError(f"BERTH_E2E_STORAGE={STORAGE!r}: use filesystem or s3")
    endpoint = os.environ.get("S3_TEST_ENDPOINT")
    if not endpoint:
        message = "BERTH_E2E_STORAGE=s3 needs S3_TEST_ENDPOINT (scripts/s3-test-server.sh prints it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return {
        "BERTH_STORAGE__BACKEND": "s3",
        "BERTH_STORAGE__S3__ENDPOINT": endpoint,
        "BERTH_STORAGE__S3__BUCKET": "berth-test",
        "BERTH_STORAGE__S3__PREFIX": f"e2e-{secrets.token_hex(6)}/",
        "BERTH_STORAGE__S3__ALLOW_HTTP": "true",
        "BERTH_STORAGE__S3__ACCESS_KEY_ID": "berth-test",
        "BERTH_STORAGE__S3__SECRET_ACCESS_KEY": "berth-test",
    }


# BERTH_E2E_DATABASE=postgres: the session's registry keeps its metadata in a fresh database
# of the PostgreSQL at TEST_POSTGRES_URL (scripts/pg-test-server.sh starts one).
DATABASE = os.environ.get("BERTH_E2E_DATABASE", "sqlite").strip().lower()


def psql(admin_url: str, sql: str) -> None:
    """Runs one SQL statement with `psql` against the admin URL (raises on failure)."""
    binary = require_tool("psql")
    out = subprocess.run(
        [binary, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", admin_url, "-c", sql],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"psql {sql!r} failed ({out.returncode}): {out.stderr.strip()}")


def database_url(admin_url: str, database: str) -> str:
    """The admin URL with its database replaced."""
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path="/" + database))


def postgres_admin_url() -> str:
    """TEST_POSTGRES_URL; fails under CI=true (skips elsewhere) when it is not set."""
    admin = os.environ.get("TEST_POSTGRES_URL", "").strip()
    if not admin:
        message = "PostgreSQL tests need TEST_POSTGRES_URL (scripts/pg-test-server.sh prints it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return admin


def database_env() -> dict:
    """Configuration (as BERTH_* variables) for the session's metadata store."""
    if DATABASE == "sqlite":
        return {}
    if DATABASE != "postgres":
        raise RuntimeError(f"BERTH_E2E_DATABASE={DATABASE!r}: use sqlite or postgres")
    admin = postgres_admin_url()
    name = f"e2e_{secrets.token_hex(6)}"
    psql(admin, f'CREATE DATABASE "{name}"')
    _databases.append(name)
    return {"BERTH_DATABASE__URL": database_url(admin, name)}


_databases: list[str] = []  # created by database_env(), dropped when the session's registry stops


def drop_databases() -> None:
    while _databases:
        name = _databases.pop()
        psql(postgres_admin_url(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def berth_env(extra: dict | None = None) -> dict:
    """The environment for a berth process: this one without BERTH_E2E_* (switches of this test
    suite, which berth would refuse as unknown configuration keys), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_E2E_")}
    env.update(extra or {})
    return env


def _auth_disabled(args: list[str], env: dict) -> bool:
    return "--no-auth" in args or env.get("BERTH_AUTH__ENABLED", "").strip().lower() in ("false", "0")


def require_tool(name: str) -> str:
    """Path of an external tool; a missing tool fails under CI=true and skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/install-test-deps.sh installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Waits until `url` answers; gives up at once when `proc` (the server) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer (401 with auth on) means it is up
        except OSError:
            if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
                raise
            time.sleep(0.1)


@dataclass
class Registry:
    url: str  # http://127.0.0.1:PORT
    host: str  # 127.0.0.1:PORT, as clients name it in image references
    user: str | None = None
    password: str | None = None
    data_dir: Path | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = None

    @property
    def creds(self) -> tuple[str, str] | None:
        return (self.user, self.password) if self.user else None


def start_berth(tmp: Path, extra_args: list[str] | None = None, env: dict | None = None,
                preexec_fn=None) -> Registry:
    """`berth serve` on a free loopback port with its data under `tmp`, `extra_args` added to its
    command line and `env` to its environment (see `berth_env`).

    The Registry's credentials: none with `--no-auth` (or BERTH_AUTH__ENABLED=false); `admin`
    and the password when `env` (or this environment) sets BERTH_ADMIN_PASSWORD; otherwise
    REGISTRY_USER and REGISTRY_PASSWORD, if set. `preexec_fn` runs in the child before berth
    (to set resource limits, say)."""
    args = list(extra_args or [])
    child_env = berth_env(env)
    if _auth_disabled(args, child_env):
        user, password = None, None
    elif child_env.get("BERTH_ADMIN_PASSWORD"):
        user, password = ADMIN_USER, child_env["BERTH_ADMIN_PASSWORD"]
    else:
        user, password = os.environ.get("REGISTRY_USER"), os.environ.get("REGISTRY_PASSWORD")
    binary = os.environ.get("BERTH_BIN", str(ROOT / "target" / "debug" / "berth"))
    if not Path(binary).exists():
        pytest.fail(f"berth binary not found at {binary}: run `cargo build` first")
    port = free_port()
    data_dir = tmp / "data"
    log_path = tmp / "berth.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=child_env,
        preexec_fn=preexec_fn,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/v2/", proc=proc)
    except OSError:
        proc.kill()
        raise RuntimeError(f"berth did not start; log:\n{log_path.read_text(errors='replace')}")
    return Registry(
        url=url,
        host=f"127.0.0.1:{port}",
        user=user,
        password=password,
        data_dir=data_dir,
        proc=proc,
        log_path=log_path,
    )


def stop_berth(reg: Registry) -> None:
    if reg.proc is not None and reg.proc.poll() is None:
        reg.proc.terminate()
        try:
            reg.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            reg.proc.kill()
            reg.proc.wait()


@pytest.fixture(scope="session")
def registry():
    url = os.environ.get("REGISTRY_URL")
    if url:
        host = url.split("://", 1)[1].rstrip("/")
        yield Registry(
            url=url.rstrip("/"),
            host=host,
            user=os.environ.get("REGISTRY_USER"),
            password=os.environ.get("REGISTRY_PASSWORD"),
        )
        return
    tmp = Path(tempfile.mkdtemp(prefix="berth-e2e-"))
    if AUTH:
        admin_password = secrets.token_urlsafe(24)
        reg = start_berth(
            tmp,
            env={
                "BERTH_ADMIN_PASSWORD": admin_password,
                "BERTH_AUTH__AUTO_CREATE_PROJECTS": "true",
                **storage_env(),
                **database_env(),
            },
        )
        user, password = "e2e-user", secrets.token_urlsafe(24)
        import requests

        r = requests.post(
            reg.url + "/api/v1/users",
            json={"name": user, "password": password, "admin": False},
            auth=(ADMIN_USER, admin_password),
            timeout=30,
        )
        if r.status_code != 201:
            stop_berth(reg)
            raise RuntimeError(f"creating the e2e user failed: {r.status_code} {r.text}")
        reg.user, reg.password = user, password
    else:
        reg = start_berth(tmp, ["--no-auth"], env={**storage_env(), **database_env()})
    yield reg
    stop_berth(reg)
    drop_databases()
    if reg.proc is not None and reg.proc.returncode not in (0, None):
        print(f"berth exited with {reg.proc.returncode}; log kept at {reg.log_path}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
