"""The berth process as operators run it: crashes, SIGTERM, TLS, slow clients, memory, config.

Each test starts its own `berth serve` on a fresh data directory (tests/e2e/conftest.py), with
`--no-auth`: these tests are about the process, not about authentication (tests/e2e/auth)."""

import hashlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import ROOT, berth_env, free_port, require_tool, start_berth, stop_berth, wait_http

MiB = 1 << 20
BERTH = os.environ.get("BERTH_BIN", str(ROOT / "target" / "debug" / "berth"))
NO_AUTH = ["--no-auth"]


@pytest.fixture
def tmp(tmp_path):
    return tmp_path


def restart(reg, tmp: Path):
    """Starts berth again on the same data directory (a new port, the same state)."""
    args = ["--data-dir", str(reg.data_dir), *NO_AUTH]
    port = free_port()
    log = open(tmp / "berth-restart.log", "ab")
    proc = subprocess.Popen([BERTH, "serve", "--listen", f"127.0.0.1:{port}", *args], stdout=log, stderr=subprocess.STDOUT,
                            env=berth_env())
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/v2/")
    reg.proc, reg.url = proc, url
    return reg


def chunks(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_kill_during_chunked_upload_keeps_the_committed_offset(tmp):
    reg = start_berth(tmp, NO_AUTH)
    try:
        data = os.urandom(6 * MiB)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = requests.post(f"{reg.url}/v2/crash/chunked/blobs/uploads/")
        assert r.status_code == 202
        location = r.headers["Location"]
        r = requests.patch(reg.url + location, data=data[:MiB], headers={"Content-Range": f"0-{MiB - 1}"})
        assert r.status_code == 202, r.text
        location = r.headers["Location"]

        def dying_body():
            sent = 0
            for c in chunks(data[MiB:], 256 * 1024):
                yield c
                sent += len(c)
                if sent >= 2 * MiB:
                    reg.proc.send_signal(signal.SIGKILL)
                    reg.proc.wait()
                    time.sleep(0.2)
                    yield b"x" * 1024  # the connection is gone by now

        with pytest.raises(requests.exceptions.ConnectionError):
            requests.patch(reg.url + location, data=dying_body())

        restart(reg, tmp)
        r = requests.get(reg.url + location)
        assert r.status_code == 204
        assert r.headers["Range"] == f"0-{MiB - 1}", "only the acknowledged chunk counts after a crash"
        r = requests.patch(
            reg.url + location, data=data[MiB:], headers={"Content-Range": f"{MiB}-{len(data) - 1}"}
        )
        assert r.status_code == 202, r.text
        r = requests.put(reg.url + r.headers["Location"], params={"digest": digest})
        assert r.status_code == 201, r.text
        r = requests.get(f"{reg.url}/v2/crash/chunked/blobs/{digest}")
        assert r.status_code == 200
        assert hashlib.sha256(r.content).hexdigest() == digest.split(":")[1]
    finally:
        stop_berth(reg)


def test_kill_during_monolithic_push_leaves_nothing_visible(tmp):
    reg = start_berth(tmp, NO_AUTH)
    try:
        data = os.urandom(4 * MiB)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()

        def dying_body():
            for i, c in enumerate(chunks(data, 256 * 1024)):
                yield c
                if i == 8:
                    reg.proc.send_signal(signal.SIGKILL)
                    reg.proc.wait()
                    time.sleep(0.2)

        with pytest.raises(requests.exceptions.ConnectionError):
            requests.post(f"{reg.url}/v2/crash/mono/blobs/uploads/", params={"digest": digest}, data=dying_body())
        restart(reg, tmp)
        assert requests.head(f"{reg.url}/v2/crash/mono/blobs/{digest}").status_code == 404
        hexdir = reg.data_dir / "blobs" / "sha256" / digest[7:9] / digest[7:]
        assert not hexdir.exists(), "no partial blob may sit under blobs/"
    finally:
        stop_berth(reg)


def test_sigterm_lets_an_in_flight_upload_finish(tmp):
    reg = start_berth(tmp, NO_AUTH)
    try:
        data = os.urandom(4 * MiB)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        location = requests.post(f"{reg.url}/v2/graceful/up/blobs/uploads/").headers["Location"]
        terminated = threading.Event()

        upload_file = tmp / "data" / "uploads" / location.rstrip("/").rsplit("/", 1)[-1]

        def slow_body():
            for i, c in enumerate(chunks(data, 128 * 1024)):
                if i == 12:
                    # The signal must land while the request is in flight, not before berth has
                    # accepted the connection: wait until the handler has written body bytes.
                    # 1.5 MiB are sent by now; berth writes each 512 KiB piece as it fills.
                    deadline = time.monotonic() + 20
                    while not (upload_file.exists() and upload_file.stat().st_size > 0):
                        assert time.monotonic() < deadline, "berth never wrote the PATCH body"
                        time.sleep(0.01)
                    reg.proc.send_signal(signal.SIGTERM)
                    terminated.set()
                    time.sleep(0.5)
                yield c

        r = requests.patch(reg.url + location, data=slow_body())
        assert terminated.is_set()
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == f"0-{len(data) - 1}"
        assert reg.proc.wait(timeout=20) == 0, "berth exits cleanly once the request is done"
        restart(reg, tmp)
        r = requests.put(reg.url + location, params={"digest": digest})
        assert r.status_code == 201, r.text
    finally:
        stop_berth(reg)


def test_tls_listener(tmp):
    openssl = require_tool("openssl")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    port = free_port()
    env = berth_env({"BERTH_SERVER__TLS_CERT": str(cert), "BERTH_SERVER__TLS_KEY": str(key)})
    log = open(tmp / "tls.log", "wb")
    proc = subprocess.Popen([BERTH, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp / "data"), *NO_AUTH],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.get(f"https://127.0.0.1:{port}/v2/", verify=str(cert), timeout=2)
                break
            except requests.exceptions.ConnectionError:
                assert time.monotonic() < deadline, (tmp / "tls.log").read_text()
                time.sleep(0.1)
        assert r.status_code == 200
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        data = os.urandom(300 * 1024)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = requests.post(f"https://127.0.0.1:{port}/v2/tls/x/blobs/uploads/", params={"digest": digest},
                          data=data, verify=str(cert))
        assert r.status_code == 201
        r = requests.get(f"https://127.0.0.1:{port}/v2/tls/x/blobs/{digest}", verify=str(cert))
        assert r.content == data
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/v2/", timeout=5)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_slow_header_client_is_disconnected(tmp):
    reg = start_berth(tmp, NO_AUTH, env={"BERTH_SERVER__HEADER_READ_TIMEOUT": "1s"})
    try:
        host, port = reg.host.split(":")
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        start = time.monotonic()
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        waited = time.monotonic() - start
        # The server closes the connection (possibly after a 408) instead of waiting forever.
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
        assert waited < 9, "the 10 s socket timeout would have fired first"
        assert requests.get(reg.url + "/v2/").status_code == 200, "other clients are served"
    finally:
        stop_berth(reg)


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_streaming_a_large_layer_does_not_grow_memory(tmp):
    """Pushing and pulling 1 GiB moves through bounded buffers: peak RSS grows by a few MiB."""
    reg = start_berth(tmp, NO_AUTH)
    try:
        # warm up: one small push and pull so lazily allocated pools exist before the baseline
        small = os.urandom(2 * MiB)
        d = "sha256:" + hashlib.sha256(small).hexdigest()
        requests.post(f"{reg.url}/v2/mem/warm/blobs/uploads/", params={"digest": d}, data=small).raise_for_status()
        requests.get(f"{reg.url}/v2/mem/warm/blobs/{d}").raise_for_status()
        baseline = vm_hwm_kib(reg.proc.pid)

        block = os.urandom(4 * MiB)
        total = 256  # x 4 MiB = 1 GiB
        h = hashlib.sha256()
        for _ in range(total):
            h.update(block)
        digest = "sha256:" + h.hexdigest()
        location = requests.post(f"{reg.url}/v2/mem/big/blobs/uploads/").headers["Location"]
        r = requests.patch(reg.url + location, data=(block for _ in range(total)))
        assert r.status_code == 202, r.text
        r = requests.put(reg.url + r.headers["Location"], params={"digest": digest})
        assert r.status_code == 201, r.text
        pulled = hashlib.sha256()
        with requests.get(f"{reg.url}/v2/mem/big/blobs/{digest}", stream=True) as r:
            for c in r.iter_content(MiB):
                pulled.update(c)
        assert "sha256:" + pulled.hexdigest() == digest
        grown_mib = (vm_hwm_kib(reg.proc.pid) - baseline) / 1024
        assert grown_mib < 32, f"peak RSS grew by {grown_mib:.1f} MiB while moving 1 GiB"
    finally:
        stop_berth(reg)


def test_config_check_env_overrides_and_unknown_keys(tmp):
    good = tmp / "berth.toml"
    good.write_text('data_dir = "/srv/berth"\n[server]\nlisten = "127.0.0.1:6000"\n[limits]\nmanifest_max_size = "8MiB"\n')
    out = subprocess.run([BERTH, "config", "check", str(good)], capture_output=True, text=True, timeout=30,
                         env=berth_env({"BERTH_SERVER__EXTERNAL_URL": "https://registry.example.com"}))
    assert out.returncode == 0, out.stderr
    assert 'listen = "127.0.0.1:6000"' in out.stdout
    assert 'data_dir = "/srv/berth"' in out.stdout
    assert 'external_url = "https://registry.example.com"' in out.stdout, "environment overrides the file"
    assert "8.0 MiB" in out.stdout or "8MiB" in out.stdout or "8 MiB" in out.stdout, out.stdout

    bad = tmp / "bad.toml"
    bad.write_text('[server]\nlisen = "127.0.0.1:6000"\n')
    out = subprocess.run([BERTH, "config", "check", str(bad)], capture_output=True, text=True, timeout=30,
                         env=berth_env())
    assert out.returncode != 0
    assert "lisen" in out.stderr, out.stderr

    out = subprocess.run([BERTH, "config", "check", str(good)], capture_output=True, text=True, timeout=30,
                         env=berth_env({"BERTH_SERVER__HEADER_READ_TIMEOUT": "soon"}))
    assert out.returncode != 0 and "soon" in out.stderr, out.stderr

    helptext = subprocess.run([BERTH, "--help"], capture_output=True, text=True, timeout=30).stdout
    assert "serve" in helptext and "config" in helptext
    helptext = subprocess.run([BERTH, "serve", "--help"], capture_output=True, text=True, timeout=30).stdout
    assert "--listen" in helptext and "--data-dir" in helptext and "--config" in helptext
