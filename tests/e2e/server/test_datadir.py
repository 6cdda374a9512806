"""The data directory as an operator finds it (issue 15): private modes (review finding 3), one
server per directory, and the first admin's password.

The data directory holds the token signing keys (in berth.db) and private images' bytes, so
any local user who can read it can sign a token for the admin."""

import hashlib
import os
import stat
import subprocess
import time

import requests

from conftest import ROOT, berth_env, free_port, start_berth, stop_berth

BERTH = os.environ.get("BERTH_BIN", str(ROOT / "target" / "debug" / "berth"))
NO_AUTH = ["--no-auth"]


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def push_blob(reg, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(f"{reg.url}/v2/{repo}/blobs/uploads/", params={"digest": digest}, data=data,
                      auth=reg.creds)
    assert r.status_code == 201, r.text
    return digest


def blob_files(data_dir):
    for root, _dirs, files in os.walk(data_dir / "blobs"):
        for f in files:
            yield os.path.join(root, f)


def test_a_new_data_directory_is_private(tmp_path):
    reg = start_berth(tmp_path, NO_AUTH)
    try:
        push_blob(reg, "perm/app", os.urandom(1000))
    finally:
        stop_berth(reg)
    data = reg.data_dir
    assert mode(data) == 0o700, oct(mode(data))
    for name in ("berth.db", "berth.db-wal", "berth.db-shm"):
        if (data / name).exists():
            assert mode(data / name) == 0o600, (name, oct(mode(data / name)))
    for root, dirs, files in os.walk(data):
        for d in dirs:
            assert mode(os.path.join(root, d)) & 0o077 == 0, (d, oct(mode(os.path.join(root, d))))
        for f in files:
            assert mode(os.path.join(root, f)) & 0o077 == 0, (f, oct(mode(os.path.join(root, f))))
    assert list(blob_files(data)), "the push stored a blob file"


def test_an_upgraded_install_is_tightened_and_keeps_starting(tmp_path):
    reg = start_berth(tmp_path, NO_AUTH)
    try:
        digest = push_blob(reg, "perm/app", os.urandom(1000))
    finally:
        stop_berth(reg)
    data = reg.data_dir
    # What an install before this fix looked like: world-readable everywhere.
    os.chmod(data, 0o755)
    os.chmod(data / "berth.db", 0o644)
    for root, dirs, files in os.walk(data / "blobs"):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)

    reg = start_berth(tmp_path, NO_AUTH)
    try:
        r = requests.get(f"{reg.url}/v2/perm/app/blobs/{digest}")
        assert r.status_code == 200
        log = reg.log_path.read_text(errors="replace")
    finally:
        stop_berth(reg)
    assert mode(data) & 0o007 == 0, oct(mode(data))
    assert mode(data / "berth.db") & 0o007 == 0, oct(mode(data / "berth.db"))
    # Group bits stay (Kubernetes fsGroup volumes rely on them).
    assert mode(data) & 0o070 == 0o050, oct(mode(data))
    assert "tightened" in log, log


def test_a_second_server_on_the_same_data_directory_is_refused(tmp_path):
    reg = start_berth(tmp_path, NO_AUTH)
    try:
        port = free_port()
        out = subprocess.run(
            [BERTH, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(reg.data_dir), *NO_AUTH],
            capture_output=True, text=True, timeout=30, env=berth_env(),
        )
        assert out.returncode != 0, "a second berth serve started on the same data directory"
        assert "already" in out.stderr and str(reg.data_dir) in out.stderr, out.stderr
        # `berth gc` beside the server is supported.
        gc = subprocess.run([BERTH, "gc", "--data-dir", str(reg.data_dir)], capture_output=True,
                            text=True, timeout=120, env=berth_env())
        assert gc.returncode == 0, gc.stderr
        assert requests.get(reg.url + "/v2/").status_code == 200
    finally:
        stop_berth(reg)


def test_the_admin_password_follows_the_rules_and_a_changed_one_is_reported(tmp_path):
    # Too short: refused before anything is created.
    port = free_port()
    out = subprocess.run(
        [BERTH, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=30, env=berth_env({"BERTH_ADMIN_PASSWORD": "short"}),
    )
    assert out.returncode != 0
    assert "BERTH_ADMIN_PASSWORD" in out.stderr and "8" in out.stderr, out.stderr

    first = "the first admin password"
    reg = start_berth(tmp_path, env={"BERTH_ADMIN_PASSWORD": first})
    try:
        assert requests.get(reg.url + "/api/v1/me", auth=("admin", first)).status_code == 200
    finally:
        stop_berth(reg)
    reg = start_berth(tmp_path, env={"BERTH_ADMIN_PASSWORD": "a different password"})
    try:
        # The admin exists: the variable is ignored, and the log says so.
        deadline = time.monotonic() + 10
        while "BERTH_ADMIN_PASSWORD" not in reg.log_path.read_text(errors="replace"):
            assert time.monotonic() < deadline, reg.log_path.read_text(errors="replace")
            time.sleep(0.1)
        line = [l for l in reg.log_path.read_text(errors="replace").splitlines() if "BERTH_ADMIN_PASSWORD" in l][0]
        assert "ignored" in line, line
        assert requests.get(reg.url + "/api/v1/me", auth=("admin", first)).status_code == 200
    finally:
        stop_berth(reg)
