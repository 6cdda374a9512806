"""Fixtures of the fault-injection suite: the backends under a `berth serve`, made to fail on
command, and berths started by the tests themselves on them.

- `berths`: starts `berth serve` (tests/e2e/conftest.py's `start_berth`: a free loopback port,
  data directory `<tmp>/data`, log `<tmp>/berth.log`) and stops every one it started. The fixtures
  below stop them too before they take their backend away, so nothing is unmounted or stopped
  under a running berth.
- `loop_ext4`: a 64 MiB ext4 image, loop-mounted at `<tmp>/data` (needs root, mkfs.ext4,
  /dev/loop-control). Always unmounted, and its loop device detached, at teardown.
- `eio_fs`: `<tmp>/backing` mirrored at `<tmp>/data` by eiofs.py (a fusepy passthrough run with
  the system Python, /usr/bin/python3, which has Debian's python3-fusepy), whose control file
  makes reads or writes under a path prefix fail with EIO (see eiofs.py).
- `s3_endpoint`: S3_TEST_ENDPOINT, or a moto server of this module's own (.venv-s3, installed by
  scripts/s3-test-server.sh --install) with the bucket `berth-test`; `s3_proxy`: s3proxy.py's
  fault-injecting proxy in front of it, in pass-through mode.
- `postgres`: a PostgreSQL of this test's own (Debian's /usr/lib/postgresql/*/bin, initdb into a
  temporary directory, as scripts/pg-test-server.sh does) on a free port, which the test can
  restart.

A missing tool fails the test under CI=true and skips it elsewhere (tests/e2e/conftest.py's
`require_tool`). When a test fails, the last lines of its berths' logs are added to the report.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import IN_CI, ROOT, Registry, berth_env, free_port, require_tool, start_berth, stop_berth

from .s3proxy import FaultProxy

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"
S3_BUCKET = "berth-test"


def missing(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def run(cmd: list[str], timeout: float = 60, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return out


def berth_binary() -> str:
    binary = os.environ.get("BERTH_BIN", str(ROOT / "target" / "debug" / "berth"))
    if not Path(binary).exists():
        pytest.fail(f"berth binary not found at {binary}: run `cargo build` first")
    return binary


# --- berths --------------------------------------------------------------------------------------


class Berths:
    def __init__(self):
        self.started: list[Registry] = []

    def start(self, tmp: Path, args: list[str] | None = None, env: dict | None = None) -> Registry:
        # `berth config check` first: a setting berth refuses fails the test at once, with berth's
        # own words, instead of after start_berth's 30 s wait for a process that exited.
        empty = tmp / "empty.toml"
        empty.write_text("")
        check = run([berth_binary(), "config", "check", str(empty)], check=False, env=berth_env(env))
        if check.returncode != 0:
            pytest.fail(f"berth refuses this test's configuration: {check.stderr.strip()}")
        reg = start_berth(tmp, args, env)
        self.started.append(reg)
        return reg

    def stop_all(self) -> None:
        for reg in self.started:
            stop_berth(reg)

    def log_tails(self, lines: int = 60) -> str:
        out = []
        for reg in self.started:
            if reg.log_path and reg.log_path.exists():
                tail = reg.log_path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- last {len(tail)} lines of {reg.log_path}:\n" + "\n".join(tail))
        return "\n".join(out)


@pytest.fixture
def berths():
    b = Berths()
    yield b
    b.stop_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report gets the last lines of the logs of the berths it started."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    b = getattr(item, "funcargs", {}).get("berths")
    if isinstance(b, Berths) and b.started:
        try:
            report.sections.append(("berth logs", b.log_tails()))
        except Exception as e:  # noqa: BLE001 - never hide the failure itself
            report.sections.append(("berth logs", f"could not read the logs: {e!r}"))


# --- a small ext4 on a loop device ---------------------------------------------------------------


class LoopExt4:
    def __init__(self, image: Path, mountpoint: Path):
        self.image = image
        self.mountpoint = mountpoint

    def free_bytes(self) -> int:
        st = os.statvfs(self.mountpoint)
        return st.f_bavail * st.f_frsize

    def leave_free(self, free: int, name: str = "filler") -> Path:
        """Grows (creating it if need be) or shrinks the file `name` at the top of the filesystem
        until about `free` bytes are left; with `free` 0, until the disk refuses even one more
        byte (ENOSPC). Everything is flushed before it returns, so what the filesystem reports
        free is what a writer can get."""
        path = self.mountpoint / name
        os.sync()
        have = self.free_bytes()
        if free == 0 or have > free:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                left = have - free if free else None  # None: until ENOSPC
                for size in (1 << 20, 64 << 10, 4096, 1):
                    while left is None or left > 0:
                        n = size if left is None else min(size, left)
                        try:
                            written = os.write(fd, b"\xa5" * n)
                        except OSError as e:
                            if e.errno != errno.ENOSPC:
                                raise
                            break
                        if left is not None:
                            left -= written
                try:
                    os.fsync(fd)
                except OSError:
                    pass  # a full disk may refuse the flush of the last metadata
            finally:
                os.close(fd)
        elif have < free and path.exists():
            os.truncate(path, max(0, path.stat().st_size - (free - have)))
        os.sync()
        return path

    def loop_devices(self) -> list[str]:
        out = run(["losetup", "-j", str(self.image)], check=False)
        return [line.split(":", 1)[0] for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture
def loop_ext4(tmp_path, berths):
    if os.geteuid() != 0:
        missing("the ENOSPC test mounts a loop device: it needs root")
    mkfs = require_tool("mkfs.ext4")
    require_tool("losetup")
    if not os.path.exists("/dev/loop-control"):
        missing("no /dev/loop-control: loop devices are not available here")
    image = tmp_path / "disk.img"
    mountpoint = tmp_path / "data"
    mountpoint.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    # -m 0: no blocks reserved for root (berth runs as root here and would get them).
    run([mkfs, "-q", "-F", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)])
    run(["mount", "-o", "loop", str(image), str(mountpoint)])
    disk = LoopExt4(image, mountpoint)
    try:
        yield disk
    finally:
        berths.stop_all()  # nothing may hold the filesystem
        if os.path.ismount(mountpoint):
            if run(["umount", str(mountpoint)], check=False).returncode != 0:
                run(["umount", "-l", str(mountpoint)], check=False)
        for dev in disk.loop_devices():  # mount -o loop sets autoclear; this is in case
            run(["losetup", "-d", dev], check=False)
        leftover = disk.loop_devices()
        image.unlink(missing_ok=True)
        assert not leftover, f"loop devices still attached to {image}: {leftover}"


# --- a FUSE filesystem that fails with EIO on command ----------------------------------------------


class EioFs:
    def __init__(self, backing: Path, mountpoint: Path, control: Path):
        self.backing = backing
        self.mountpoint = mountpoint
        self.control = control
        self.hits_path = Path(str(control) + ".hits")

    def set(self, *rules: str) -> None:
        """Replaces the rules (eiofs.py: `read PREFIX [FROM]`, `write PREFIX`, `data PREFIX`);
        none: no faults."""
        tmp = self.control.with_suffix(".new")
        tmp.write_text("".join(r + "\n" for r in rules))
        os.replace(tmp, self.control)

    def clear(self) -> None:
        self.set()

    def hits(self) -> list[str]:
        """Every EIO injected so far (`read|write|data PATH`)."""
        return self.hits_path.read_text().splitlines() if self.hits_path.exists() else []


@pytest.fixture
def eio_fs(tmp_path, berths):
    if os.geteuid() != 0:
        missing("the EIO test mounts a FUSE filesystem: it needs root")
    if not os.path.exists("/dev/fuse"):
        missing("no /dev/fuse here")
    if not os.path.exists(SYSTEM_PYTHON):
        missing(f"{SYSTEM_PYTHON} is missing")
    probe = run([SYSTEM_PYTHON, "-c", "import fusepy"], check=False)
    if probe.returncode != 0:
        missing("python3-fusepy is not installed (scripts/install-test-deps.sh installs it): "
                + probe.stderr.strip().splitlines()[-1])
    backing, mountpoint, control = tmp_path / "backing", tmp_path / "data", tmp_path / "eio-control"
    backing.mkdir()
    mountpoint.mkdir()
    fs = EioFs(backing, mountpoint, control)
    fs.clear()
    log = open(tmp_path / "eiofs.log", "wb")
    proc = subprocess.Popen([SYSTEM_PYTHON, str(HERE / "eiofs.py"), str(backing), str(mountpoint), str(control)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not os.path.ismount(mountpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"eiofs.py did not mount {mountpoint}: "
                                   f"{(tmp_path / 'eiofs.log').read_text(errors='replace')}")
            time.sleep(0.05)
        yield fs
    finally:
        berths.stop_all()
        fs.clear()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # libfuse unmounts and leaves its loop
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if os.path.ismount(mountpoint):
            run(["umount", "-l", str(mountpoint)], check=False)
        log.close()
        assert not os.path.ismount(mountpoint), f"{mountpoint} is still mounted"


# --- S3 behind a fault-injecting proxy -------------------------------------------------------------


def _wait_answering(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} during startup")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout}s")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """S3_TEST_ENDPOINT (bucket berth-test, as scripts/s3-test-server.sh makes it), or a moto
    server of this module's own when it is not set. Under CI=true it must be set."""
    endpoint = os.environ.get("S3_TEST_ENDPOINT", "").strip()
    if endpoint:
        yield endpoint.rstrip("/")
        return
    message = "S3 fault tests need S3_TEST_ENDPOINT (scripts/s3-test-server.sh prints it)"
    if IN_CI:
        pytest.fail(message)
    moto = ROOT / ".venv-s3" / "bin" / "moto_server"
    if not moto.exists():
        pytest.skip(message + "; or moto in .venv-s3 (scripts/s3-test-server.sh --install)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_answering(url + "/", proc)
        req = urllib.request.Request(f"{url}/{S3_BUCKET}", method="PUT")
        urllib.request.urlopen(req, timeout=10).read()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def s3_proxy(s3_endpoint, berths):
    proxy = FaultProxy(s3_endpoint)
    proxy.start()
    try:
        yield proxy
    finally:
        berths.stop_all()
        proxy.stop()


# --- a PostgreSQL of the test's own -----------------------------------------------------------------


class Postgres:
    """A fresh cluster in a temporary directory (owned by the `postgres` account when running as
    root: PostgreSQL refuses to run as root), listening on 127.0.0.1:port only."""

    def __init__(self, pgbin: str, root: Path, port: int):
        self.pgbin = pgbin
        self.root = root
        self.data = root / "data"
        self.port = port
        self.url = f"postgres://postgres@127.0.0.1:{port}/postgres"
        self.log = root / "server.log"

    def _as_pg(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def ctl(self, *args: str, timeout: float = 60) -> None:
        run(self._as_pg([f"{self.pgbin}/pg_ctl", "-D", str(self.data), *args]), timeout=timeout)

    def initdb(self) -> None:
        run(self._as_pg([f"{self.pgbin}/initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                         "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"]), timeout=120)

    def start(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        self.ctl("-l", str(self.log), "-w", "-t", "60", "-o", opts, "start")

    def stop(self, mode: str = "fast") -> None:
        self.ctl("-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        out = run(self._as_pg([f"{self.pgbin}/pg_ctl", "-D", str(self.data), "status"]), check=False)
        return out.returncode == 0


@pytest.fixture
def postgres(berths):
    if os.geteuid() == 0 and run(["id", "-u", "postgres"], check=False).returncode != 0:
        missing("no `postgres` account to run PostgreSQL as (Debian's postgresql package creates it)")
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2].split(".")[0]))
    if not bins or not os.path.exists(f"{bins[-1]}/initdb"):
        missing("PostgreSQL is not installed (scripts/install-test-deps.sh installs it)")
    require_tool("runuser")
    # Not under pytest's tmp_path: its parents are 0700 root, which the postgres account cannot
    # traverse.
    root = Path(tempfile.mkdtemp(prefix="berth-faults-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    pg = Postgres(bins[-1], root, free_port())
    try:
        pg.initdb()
        pg.start()
        yield pg
    finally:
        berths.stop_all()
        if (pg.data / "postmaster.pid").exists():
            try:
                pg.stop("immediate")
            except Exception as e:  # noqa: BLE001
                print(f"stopping the test PostgreSQL failed: {e}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
