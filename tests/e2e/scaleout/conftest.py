"""Fixtures of the scale-out suite: clusters of three `berth serve` nodes that share one
PostgreSQL database and one S3 key prefix, as operators run Berth behind a load balancer.

What the suite needs from its environment:

- TEST_POSTGRES_URL: an admin URL of a PostgreSQL server, e.g.
  postgres://postgres@127.0.0.1:5432/postgres (`scripts/pg-test-server.sh` starts one and prints
  it). Every cluster gets a database of its own, created with `psql` and dropped at teardown.
- S3_TEST_ENDPOINT: an S3 server holding the bucket `berth-test` (`scripts/s3-test-server.sh`
  starts moto and prints it). Every cluster gets a key prefix of its own, shared by its nodes.

Without either, the suite fails under CI=true and is skipped elsewhere.

    TEST_POSTGRES_URL=... S3_TEST_ENDPOINT=... .venv/bin/pytest tests/e2e/scaleout -v

Every node of a cluster runs the same binary (BERTH_BIN, default target/debug/berth) with the
same configuration but for its own data directory and port:

- BERTH_DATABASE__URL: the cluster's database;
- BERTH_JOBS__LEASE=3s and BERTH_JOBS__POLL_INTERVAL=1s, so that a job whose node died is taken
  over within seconds;
- blobs in S3 exactly as tests/e2e/conftest.py's `storage_env()` configures them, plus
  BERTH_STORAGE__S3__REDIRECT=true (blob GETs answer 307 to a presigned URL);
- authentication on, the admin `admin` created from BERTH_ADMIN_PASSWORD (the same on every
  node; only the first start creates it) and BERTH_AUTH__AUTO_CREATE_PROJECTS=true;
- no GC or scrub schedule, unless a test sets one.

Node 1 starts first and must answer /readyz (it runs the migrations and creates the admin)
before nodes 2 and 3 start. Each node's stdout and stderr go to `<tmp>/nodeN/berth.log`; when a
test fails, the last lines of every node of its clusters are added to the report. At teardown
every node is stopped (SIGTERM, then SIGKILL), the database dropped and the temporary directory
removed; SCALEOUT_KEEP=1 keeps both for a look.

Fixtures:
- `cluster`: one cluster per module, for tests that leave it whole;
- `make_cluster(name, extra_env=None)`: a fresh cluster for a test that breaks its cluster
  (kills nodes) or needs another configuration; every cluster it made is torn down after the
  test.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from unittest import mock

import pytest
import requests

import conftest as e2e  # tests/e2e/conftest.py: berth_env, storage_env, require_tool, ...
from auth.helpers import Client, fetch_token

ADMIN_USER = e2e.ADMIN_USER
NODES = 3
READY_TIMEOUT = 60.0  # seconds a node may take to answer /readyz (debug build, migrations)
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL at teardown
JOB_LEASE = "3s"
JOB_POLL_INTERVAL = "1s"
KEEP = os.environ.get("SCALEOUT_KEEP", "") not in ("", "0", "false")


def _missing(message: str) -> None:
    if e2e.IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def required_env(name: str, hint: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        _missing(f"the scale-out suite needs {name} ({hint})")
    return value


def berth_binary() -> str:
    binary = os.environ.get("BERTH_BIN", str(e2e.ROOT / "target" / "debug" / "berth"))
    if not Path(binary).exists():
        pytest.fail(f"berth binary not found at {binary}: run `cargo build` first")
    return binary


# --- PostgreSQL and S3 ---------------------------------------------------------------------------


psql = e2e.psql
database_url = e2e.database_url


def s3_storage_env() -> dict:
    """The S3 configuration of tests/e2e/conftest.py's `storage_env()` (a fresh prefix each
    call), whatever BERTH_E2E_STORAGE says: one call per cluster, shared by its nodes."""
    required_env("S3_TEST_ENDPOINT", "scripts/s3-test-server.sh starts moto and prints it")
    with mock.patch.object(e2e, "STORAGE", "s3"):
        return e2e.storage_env()


# --- nodes and clusters --------------------------------------------------------------------------


class NodeError(RuntimeError):
    pass


class Node:
    """One `berth serve` of a cluster. `index` is 1-based, as the tests name the nodes."""

    def __init__(self, index: int, root: Path, env: dict, binary: str):
        self.index = index
        self.port = e2e.free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.dir = root / f"node{index}"
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "berth.log"
        self.binary = binary
        self.env = e2e.berth_env({
            **env,
            "BERTH_DATA_DIR": str(self.data_dir),
            "BERTH_SERVER__LISTEN": self.host,
        })
        self.proc: subprocess.Popen | None = None
        self.pids: list[int] = []  # every process this node ran (restarts)

    def __repr__(self) -> str:
        return f"node {self.index} ({self.url}, pid {self.pid})"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Starts the process (same data directory and port every time)."""
        assert not self.alive, f"{self} is already running"
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- scaleout: starting node {self.index} on {self.host}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [self.binary, "serve"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env,
            )
        self.pids.append(self.proc.pid)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until /readyz answers 200 (database and bucket reachable); raises NodeError if the
        process exits or the time runs out."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            code = self.proc.poll()
            if code is not None:
                raise NodeError(f"node {self.index} exited with status {code} before it was ready"
                                f"{self.log_tail()}")
            try:
                r = requests.get(self.url + "/readyz", timeout=2)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except requests.RequestException as e:
                last = repr(e)
            if time.monotonic() > deadline:
                raise NodeError(f"node {self.index} not ready within {timeout:.0f}s (last /readyz: {last})"
                                f"{self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """kill -9, and reap the process."""
        assert self.alive, f"{self} is not running"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        with open(self.log_path, "ab") as log:
            log.write(f"--- scaleout: node {self.index} (pid {self.proc.pid}) killed with SIGKILL\n".encode())

    def restart(self) -> None:
        self.start()
        self.wait_ready()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return f"\n--- node {self.index}: no log at {self.log_path}"
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"\n--- last {len(tail)} lines of node {self.index}'s log ({self.log_path}):\n" + "\n".join(tail)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Cluster:
    """Three nodes on one database and one S3 prefix."""

    def __init__(self, name: str, extra_env: dict | None = None):
        self.name = name
        self.admin_url = required_env("TEST_POSTGRES_URL", "scripts/pg-test-server.sh starts PostgreSQL and prints it")
        storage = s3_storage_env()
        e2e.require_tool("psql")
        binary = berth_binary()
        self.s3_endpoint = storage["BERTH_STORAGE__S3__ENDPOINT"].rstrip("/")
        self.s3_bucket = storage["BERTH_STORAGE__S3__BUCKET"]
        self.s3_prefix = storage["BERTH_STORAGE__S3__PREFIX"]
        self.database = f"berth_scaleout_{secrets.token_hex(6)}"
        self.database_url = database_url(self.admin_url, self.database)
        self.admin_password = secrets.token_urlsafe(24)
        self.root = Path(tempfile.mkdtemp(prefix=f"berth-scaleout-{name}-"))
        self.database_created = False
        env = {
            "BERTH_DATABASE__URL": self.database_url,
            "BERTH_JOBS__LEASE": JOB_LEASE,
            "BERTH_JOBS__POLL_INTERVAL": JOB_POLL_INTERVAL,
            **storage,
            "BERTH_STORAGE__S3__REDIRECT": "true",
            "BERTH_ADMIN_PASSWORD": self.admin_password,
            "BERTH_AUTH__AUTO_CREATE_PROJECTS": "true",
            "BERTH_GC__SCHEDULE": "",
            "BERTH_SCRUB__SCHEDULE": "",
            "BERTH_SERVER__SHUTDOWN_GRACE": "2s",
            **(extra_env or {}),
        }
        self.nodes = [Node(i, self.root, env, binary) for i in range(1, NODES + 1)]
        try:
            from clients.conftest import SECRETS  # masked in the failure messages of `run`

            SECRETS.add(self.admin_password)
        except ImportError:
            pass

    # --- lifecycle

    def start(self) -> None:
        psql(self.admin_url, f'CREATE DATABASE "{self.database}"')
        self.database_created = True
        first, *others = self.nodes
        first.start()
        first.wait_ready()
        for node in others:
            node.start()
        for node in others:
            node.wait_ready()

    def destroy(self) -> None:
        """Stops every node (whatever its state), drops the database, removes the directory."""
        for node in self.nodes:
            try:
                node.stop()
            except Exception as e:  # noqa: BLE001 - the others must still be stopped
                print(f"stopping {node} failed: {e!r}")
        if KEEP:
            print(f"SCALEOUT_KEEP: cluster {self.name} kept in {self.root}, database {self.database}")
            return
        if self.database_created:
            try:
                psql(self.admin_url, f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            except Exception as e:  # noqa: BLE001
                print(f"dropping database {self.database} failed: {e}")
        shutil.rmtree(self.root, ignore_errors=True)

    # --- access

    def node(self, index: int) -> Node:
        """Node `index` (1-based)."""
        return self.nodes[index - 1]

    def node_of_pid(self, pid: int) -> Node | None:
        return next((n for n in self.nodes if pid in n.pids), None)

    @property
    def creds(self) -> tuple[str, str]:
        return ADMIN_USER, self.admin_password

    def token(self, node: int, *scopes: str) -> str:
        """A Bearer token for `scopes` from node `node`'s token endpoint (the realm its 401
        announces), signed in as the admin."""
        return fetch_token(self.node(node).url, self.creds, scopes)

    def client(self, node: int, token: str) -> Client:
        """A Session for node `node` sending the fixed Bearer `token`."""
        return Client(self.node(node).url, token=token)

    def admin(self, node: int) -> Client:
        """A Session for node `node`'s admin API (/api/v1), with the admin's Basic credentials."""
        return Client(self.node(node).url, basic=self.creds)

    def s3_keys(self, under: str = "") -> list[str]:
        """Every key of the cluster's prefix (plus `under`), listed straight from the S3 server
        (moto answers unsigned requests)."""
        keys: list[str] = []
        token = None
        for _ in range(1000):
            params = {"list-type": "2", "prefix": self.s3_prefix + under}
            if token:
                params["continuation-token"] = token
            r = requests.get(f"{self.s3_endpoint}/{self.s3_bucket}", params=params, timeout=30)
            assert r.status_code == 200, f"listing s3://{self.s3_bucket}/{self.s3_prefix}{under}: " \
                                         f"{r.status_code} {r.text[:300]}"
            root = ET.fromstring(r.content)
            local = lambda el: el.tag.rsplit("}", 1)[-1]  # noqa: E731 - strip the XML namespace
            token = None
            truncated = False
            for el in root:
                if local(el) == "Contents":
                    keys += [k.text for k in el if local(k) == "Key"]
                elif local(el) == "IsTruncated":
                    truncated = (el.text or "").strip() == "true"
                elif local(el) == "NextContinuationToken":
                    token = el.text
            if not truncated or not token:
                return keys
        raise AssertionError("the S3 listing never ended")

    def s3_blob_digests(self) -> set[str]:
        """Digests of the blobs whose bytes are in S3 (`blobs/<alg>/<ab>/<hex>/<generation>`)."""
        digests = set()
        for key in self.s3_keys("blobs/"):
            parts = key[len(self.s3_prefix):].split("/")
            if len(parts) == 5 and re.fullmatch(r"[0-9a-f]{64}", parts[3]):
                digests.add(f"{parts[1]}:{parts[3]}")
        return digests

    def log_tails(self, lines: int = 40) -> str:
        return f"cluster {self.name} (database {self.database}, s3 prefix {self.s3_prefix})" + "".join(
            n.log_tail(lines) for n in self.nodes
        )


def start_cluster(name: str, extra_env: dict | None = None) -> Cluster:
    cluster = Cluster(name, extra_env)
    try:
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster


class ClusterFactory:
    def __init__(self):
        self.clusters: list[Cluster] = []

    def __call__(self, name: str, extra_env: dict | None = None) -> Cluster:
        cluster = Cluster(name, extra_env)
        self.clusters.append(cluster)  # destroyed at teardown even if it never got ready
        cluster.start()
        return cluster

    def destroy_all(self) -> None:
        for cluster in self.clusters:
            cluster.destroy()

    def log_tails(self, lines: int = 40) -> str:
        return "\n\n".join(c.log_tails(lines) for c in self.clusters)


@pytest.fixture(scope="module")
def cluster():
    c = start_cluster("shared")
    yield c
    c.destroy()


@pytest.fixture
def make_cluster():
    factory = ClusterFactory()
    yield factory
    factory.destroy_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report gets the last lines of every node of the clusters it used."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, (Cluster, ClusterFactory)):
            try:
                report.sections.append(("berth node logs", value.log_tails()))
            except Exception as e:  # noqa: BLE001 - never hide the failure itself
                report.sections.append(("berth node logs", f"could not read the logs: {e!r}"))
