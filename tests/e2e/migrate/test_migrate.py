"""`berth migrate`, black-box: an embedded registry moved to PostgreSQL and S3 with one command.

An embedded `berth serve` (SQLite and blobs under its data directory) gets images pushed by
skopeo and by containerd's `ctr`, a user who is a developer of a project, a robot that may pull
from it, audit events (a failed login among them) and a token. Then:

- `berth migrate` refuses the source while that server runs (it holds `berth.lock`);
- the server stops; a migration into a fresh PostgreSQL database and S3 prefix (moto), held back
  by --max-rate, is killed with SIGKILL once its progress line shows blobs copied;
- a rerun without --resume is refused (the target is not empty), a rerun with --resume skips
  the blobs already copied and completes, and one more --resume copies nothing;
- a `berth serve` on the target configuration serves everything back: skopeo (as the user) and
  ctr (as the robot) pull the images with the same digests and bytes, the users, robots and
  audit events are those of the source with the same ids, and the token issued by the embedded
  server before the migration still verifies.

Needs TEST_POSTGRES_URL (scripts/pg-test-server.sh), S3_TEST_ENDPOINT (scripts/s3-test-server.sh),
skopeo, containerd and psql; without them it fails under CI=true and is skipped elsewhere.
BERTH_BIN picks the binary (default target/debug/berth).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import types
import uuid
from pathlib import Path

import pytest
import requests

import conftest as e2e
from auth.helpers import Admin, fetch_token, scope, token_response
from clients.conftest import SECRETS, Containerd, run, sandboxed
from clients.images import Image, layout_tar, random_tar, write_layout

MiB = 1 << 20
LAYER = 3 * MiB  # four layers of random bytes: 12 MiB, three seconds at the killed run's rate
TIMEOUT = (10, 60)


def berth_binary() -> str:
    binary = os.environ.get("BERTH_BIN", str(e2e.ROOT / "target" / "debug" / "berth"))
    if not Path(binary).exists():
        pytest.fail(f"berth binary not found at {binary}: run `cargo build` first")
    return binary


def required_env(name: str, hint: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        message = f"the migrate suite needs {name} ({hint})"
        if e2e.IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return value


def migrate(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([berth_binary(), "migrate", *args], capture_output=True, text=True,
                          timeout=timeout, env=e2e.berth_env())


def migrate_killed_halfway(args: list[str], timeout: float = 30) -> list[str]:
    """Runs `berth migrate args` and sends it SIGKILL as soon as its progress line shows that
    some, not all, blobs are done; returns the stderr lines seen."""
    proc = subprocess.Popen([berth_binary(), "migrate", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=e2e.berth_env())
    lines: queue.Queue[str | None] = queue.Queue()

    def pump():
        for line in proc.stderr:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                proc.wait(timeout=10)
                pytest.fail(f"the migration ended (status {proc.returncode}) before it could be killed "
                            f"half-way:\n" + "\n".join(seen))
            seen.append(line)
            m = re.match(r"blobs: (\d+)/(\d+) objects", line)
            if m and 2 <= int(m[1]) < int(m[2]):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                return seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def report_count(report: str, what: str) -> int:
    """N of `N <what>` in the blobs line of a migration report."""
    m = re.search(r"(\d+) " + re.escape(what), report)
    assert m, f"no {what!r} in the report:\n{report}"
    return int(m[1])


class Skopeo:
    def __init__(self, work: Path):
        self.binary = e2e.require_tool("skopeo")
        self.home = work / "skopeo"
        (self.home / "tmp").mkdir(parents=True)
        (self.home / "auth.json").write_text('{"auths": {}}')
        self.env = {**os.environ, "REGISTRY_AUTH_FILE": str(self.home / "auth.json"),
                    "TMPDIR": str(self.home / "tmp")}

    def __call__(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        argv = [self.binary, "--tmpdir", str(self.home / "tmp"), *args]
        return run(sandboxed(argv, self.home / "sandbox"), env=self.env, shown=argv, **kwargs)


def ctr_push(containerd: Containerd, work: Path, image: Image, ref: str, creds: str) -> None:
    """Imports `image` into a scratch namespace and pushes it as `ref` with `ctr images push`."""
    namespace = f"push-{uuid.uuid4().hex[:8]}"
    layout = write_layout(work / f"layout-{namespace}", image, "v1")
    archive = work / f"{namespace}.tar"
    archive.write_bytes(layout_tar(layout))
    containerd.ctr(namespace, "images", "import", "--no-unpack", "--base-name", ref.rsplit(":", 1)[0],
                   str(archive))
    containerd.ctr(namespace, "images", "push", "--plain-http", "--user", creds, ref)


def manifest_digest(url: str, creds: tuple[str, str], repo: str, tag: str) -> str:
    token = fetch_token(url, creds, [scope(repo, "pull")])
    r = requests.head(f"{url}/v2/{repo}/manifests/{tag}", timeout=TIMEOUT, headers={
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
    })
    assert r.status_code == 200, f"HEAD {repo}:{tag}: {r.status_code}"
    return r.headers["Docker-Content-Digest"]


def listing(admin: Admin, path: str, key: str) -> list[dict]:
    r = admin.client.get(path)
    assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:300]}"
    body = r.json()
    return body[key] if isinstance(body, dict) else body


def test_embedded_registry_moves_to_postgres_and_s3(tmp_path):
    started = time.monotonic()
    admin_url = required_env("TEST_POSTGRES_URL", "scripts/pg-test-server.sh starts PostgreSQL and prints it")
    endpoint = required_env("S3_TEST_ENDPOINT", "scripts/s3-test-server.sh starts moto and prints it")
    e2e.require_tool("psql")
    containerd = Containerd(types.SimpleNamespace(url="", creds=None), tmp_path)
    skopeo = Skopeo(tmp_path)
    admin_password = secrets.token_urlsafe(18)
    alice_password = secrets.token_urlsafe(18)
    SECRETS.update({admin_password, alice_password})
    admin_creds = ("admin", admin_password)
    alice = ("alice", alice_password)
    database = f"berth_migrate_{secrets.token_hex(6)}"
    e2e.psql(admin_url, f'CREATE DATABASE "{database}"')
    source = target = None
    for d in ("source", "target"):
        (tmp_path / d).mkdir()
    try:
        # --- an embedded registry with content, identities, audit events and a token
        source = e2e.start_berth(tmp_path / "source", env={
            "BERTH_ADMIN_PASSWORD": admin_password, "BERTH_GC__SCHEDULE": "", "BERTH_SCRUB__SCHEDULE": "",
        })
        admin = Admin(source.url, admin_creds)
        admin.create_project("team")
        admin.create_user("alice", alice_password)
        admin.set_member("team", "alice", "developer")
        robot = admin.create_robot("puller", [{"project": "team", "actions": ["pull"]}])
        SECRETS.add(robot["secret"])
        robot_creds = (robot["name"], robot["secret"])
        assert token_response(source.url, ("alice", "not-her-password"), [scope("team/sk", "pull")]).status_code == 401

        sk_image = Image(layer_tars=[random_tar(random_size=LAYER), random_tar(random_size=LAYER)])
        layout = write_layout(tmp_path / "sk-layout", sk_image, "v1")
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", ":".join(alice),
               f"oci:{layout}:v1", f"docker://{source.host}/team/sk:v1")
        ctr_image = Image(layer_tars=[random_tar(random_size=LAYER), random_tar(random_size=LAYER)])
        ctr_push(containerd, tmp_path, ctr_image, f"{source.host}/team/ctr:v1", ":".join(admin_creds))
        digests = {
            repo: manifest_digest(source.url, admin_creds, repo, "v1") for repo in ("team/sk", "team/ctr")
        }
        assert digests["team/ctr"] == ctr_image.manifest.digest
        old_token = fetch_token(source.url, alice, [scope("team/sk", "pull")])
        users = listing(admin, "/api/v1/users", "users")
        robots = listing(admin, "/api/v1/robots", "robots")
        events = admin.wait_audit(lambda e: e["result"] == "failure" and e["actor"] == "alice")
        before_events = admin.audit(limit=500)
        assert any(e["id"] == events["id"] for e in before_events)

        # --- target: a fresh database and S3 prefix, the configuration scale-out nodes would use
        config = tmp_path / "scale-out.toml"
        config.write_text(f"""
data_dir = "{tmp_path / 'target-data'}"
[database]
url = "{e2e.database_url(admin_url, database)}"
[storage]
backend = "s3"
[storage.s3]
bucket = "berth-test"
endpoint = "{endpoint}"
prefix = "migrate-{secrets.token_hex(6)}/"
allow_http = true
path_style = true
access_key_id = "berth-test"
secret_access_key = "berth-test"
[gc]
schedule = ""
[scrub]
schedule = ""
""")
        args = ["--from-data-dir", str(source.data_dir), "--to-config", str(config)]

        # --- refused while the server runs on the source
        out = migrate(*args)
        assert out.returncode != 0, out.stdout
        assert "no server runs on" in out.stderr and "berth.lock" in out.stderr, out.stderr
        e2e.stop_berth(source)
        assert source.proc.returncode == 0, source.log_path.read_text(errors="replace")[-3000:]

        # --- killed half-way, refused without --resume, completed with it
        seen = migrate_killed_halfway([*args, "--max-rate", "4MiB", "--parallel", "1"])
        print("the killed migration's last progress line:", seen[-1])
        out = migrate(*args)
        assert out.returncode != 0, out.stdout
        assert "not empty" in out.stderr and "--resume" in out.stderr, out.stderr

        out = migrate(*args, "--resume")
        assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
        print(out.stdout)
        assert "result:  complete" in out.stdout, out.stdout
        live = report_count(out.stdout, "live")
        present = report_count(out.stdout, "already in the target")
        copied = report_count(out.stdout, "copied (")
        assert live == 6 and report_count(out.stdout, "failed") == 0, out.stdout
        assert present >= 2 and present + copied == live, \
            f"the resumed run did not skip what the killed one copied:\n{out.stdout}"
        assert re.search(r"^\s+users\s+2\s+2$", out.stdout, re.M), out.stdout
        assert re.search(r"^\s+token_keys\s+1\s+1$", out.stdout, re.M), out.stdout

        again = migrate(*args, "--resume")
        assert again.returncode == 0, again.stderr
        assert "already copied by an earlier run" in again.stdout and "6 already in the target" in again.stdout, \
            again.stdout

        # --- a scale-out node on the target serves everything back
        target = e2e.start_berth(tmp_path / "target", ["--config", str(config)],
                                 env={"BERTH_ADMIN_PASSWORD": admin_password})
        assert "postgresql" in target.log_path.read_text(errors="replace")
        r = requests.get(f"{target.url}/v2/", headers={"Authorization": f"Bearer {old_token}"}, timeout=TIMEOUT)
        assert r.status_code == 200, f"the token issued before the migration: {r.status_code} {r.text[:300]}"
        r = requests.get(f"{target.url}/v2/team/sk/manifests/v1", timeout=TIMEOUT, headers={
            "Authorization": f"Bearer {old_token}", "Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digests["team/sk"], r.status_code

        # skopeo, as the user: same manifest and blobs.
        pulled = tmp_path / "sk-pulled"
        skopeo("copy", "--src-tls-verify=false", "--src-creds", ":".join(alice),
               f"docker://{target.host}/team/sk:v1", f"dir:{pulled}")
        assert "sha256:" + hashlib.sha256((pulled / "manifest.json").read_bytes()).hexdigest() \
            == digests["team/sk"]
        for blob in sk_image.blobs()[1:]:
            assert (pulled / blob.digest.split(":", 1)[1]).read_bytes() == blob.data, blob.digest

        # ctr, as the robot: same digest, every byte.
        namespace = f"pull-{uuid.uuid4().hex[:8]}"
        ref = f"{target.host}/team/ctr:v1"
        containerd.ctr(namespace, "images", "pull", "--plain-http", "--user", ":".join(robot_creds), ref)
        ls = containerd.ctr(namespace, "images", "ls").stdout.splitlines()
        assert any(line.split()[:1] == [ref] and line.split()[2] == digests["team/ctr"] for line in ls[1:]), ls
        for blob in ctr_image.blobs():
            got = containerd.ctr(namespace, "content", "get", blob.digest, binary=True).stdout
            assert got == blob.data, f"{blob.digest} pulled through ctr differs"

        # The same users, robots and audit events, with the same ids.
        target_admin = Admin(target.url, admin_creds)
        assert listing(target_admin, "/api/v1/users", "users") == users
        assert listing(target_admin, "/api/v1/robots", "robots") == robots
        after = {e["id"]: e for e in target_admin.audit(limit=1000)}
        missing = [e for e in before_events if after.get(e["id"]) != e]
        assert not missing, f"audit events lost or changed by the migration: {missing[:5]}"
        fetch_token(target.url, alice, [scope("team/sk", "pull")])
        fetch_token(target.url, robot_creds, [scope("team/ctr", "pull")])
    finally:
        for reg in (source, target):
            if reg is not None:
                e2e.stop_berth(reg)
        containerd.stop()
        e2e.psql(admin_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    took = time.monotonic() - started
    print(f"the migrate test took {took:.1f} s")
