"""Connection limits (review finding 1, issue 15): idle and silent connections, caps per client
address and in total, file-descriptor exhaustion.

About 20,000 TCP connections that sent nothing used to exhaust berth's file descriptors:
/healthz stopped answering and the log filled with "accept failed". Each test here starts its
own berth with lowered limits and opens the connections itself. Linux routes all of 127.0.0.0/8
to the loopback interface, so binding a client socket to 127.0.0.2, .3, ... gives the test
several client addresses on one machine."""

import http.client
import resource
import socket
import threading
import time

import pytest
import requests

from conftest import start_berth, stop_berth

NO_AUTH = ["--no-auth"]


def connect(reg, source: str = "127.0.0.1") -> socket.socket:
    host, port = reg.host.split(":")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((source, 0))
    s.settimeout(10)
    s.connect((host, int(port)))
    return s


def is_closed(s: socket.socket, within: float) -> bool:
    """Whether the server closes `s` within `within` seconds (EOF or reset; a 408 first is
    fine)."""
    s.settimeout(within)
    deadline = time.monotonic() + within
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
            if time.monotonic() > deadline:
                return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (socket.timeout, TimeoutError):
        return False


def healthz(reg, source: str = "127.0.0.1", timeout: float = 5) -> int:
    host, port = reg.host.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=timeout, source_address=(source, 0))
    try:
        c.request("GET", "/healthz")
        return c.getresponse().status
    finally:
        c.close()


def get_on(s: socket.socket, path: str = "/healthz") -> bytes:
    """Sends one HTTP/1.1 request on an open socket and returns the status line."""
    s.settimeout(10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: berth\r\n\r\n".encode())
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def test_silent_connections_are_closed_after_the_header_timeout(tmp_path):
    reg = start_berth(tmp_path, NO_AUTH, env={"BERTH_SERVER__HEADER_READ_TIMEOUT": "2s"})
    socks = []
    try:
        socks = [connect(reg) for _ in range(50)]
        # HTTP/2 with prior knowledge: the preface and an empty SETTINGS frame, then nothing.
        h2 = connect(reg)
        h2.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        start = time.monotonic()
        for s in socks:
            assert is_closed(s, max(0.1, 8 - (time.monotonic() - start))), \
                "a connection that never sent a byte is still open 8 s after a 2 s header timeout"
        assert is_closed(h2, max(0.1, 8 - (time.monotonic() - start))), \
            "an HTTP/2 connection that sent no request is still open"
        assert healthz(reg) == 200
    finally:
        for s in socks:
            s.close()
        stop_berth(reg)


def test_idle_keep_alive_connections_are_closed(tmp_path):
    reg = start_berth(tmp_path, NO_AUTH, env={"BERTH_SERVER__IDLE_TIMEOUT": "2s"})
    try:
        s = connect(reg)
        assert get_on(s).startswith(b"HTTP/1.1 200")
        # A second request soon after is served on the same connection ...
        assert get_on(s).startswith(b"HTTP/1.1 200")
        # ... and the idle connection goes after its own timeout.
        assert is_closed(s, 8), "an idle keep-alive connection outlived server.idle_timeout"
        s.close()
    finally:
        stop_berth(reg)


def test_the_per_address_cap_refuses_the_excess_at_once(tmp_path):
    reg = start_berth(tmp_path, NO_AUTH, env={
        "BERTH_SERVER__MAX_CONNECTIONS_PER_ADDRESS": "20",
        "BERTH_SERVER__TRUSTED_PROXIES": "127.0.0.3",
    })
    socks = []
    try:
        socks = [connect(reg, "127.0.0.2") for _ in range(20)]
        extra = connect(reg, "127.0.0.2")
        assert is_closed(extra, 2), "the 21st connection of one address was kept (or queued)"
        extra.close()
        # Other addresses, and the existing connections of the capped one, are served.
        assert healthz(reg, "127.0.0.1") == 200
        assert get_on(socks[0]).startswith(b"HTTP/1.1 200")
        # A trusted proxy is one address for many clients: it is not capped.
        proxy = [connect(reg, "127.0.0.3") for _ in range(40)]
        assert get_on(proxy[-1]).startswith(b"HTTP/1.1 200")
        socks += proxy
    finally:
        for s in socks:
            s.close()
        stop_berth(reg)


def test_the_total_cap_keeps_healthz_and_active_clients_served(tmp_path):
    reg = start_berth(tmp_path, NO_AUTH, env={
        "BERTH_SERVER__MAX_CONNECTIONS": "30",
        "BERTH_SERVER__MAX_CONNECTIONS_PER_ADDRESS": "1000",
    })
    socks = []
    try:
        # An upload in progress: its body is sent slowly from another thread.
        location = requests.post(f"{reg.url}/v2/caps/up/blobs/uploads/").headers["Location"]
        release = threading.Event()
        result = {}

        def body():
            yield b"a" * 1000
            release.wait(30)
            yield b"b" * 1000

        def upload():
            result["r"] = requests.patch(reg.url + location, data=body(), timeout=60)

        t = threading.Thread(target=upload)
        t.start()
        time.sleep(0.5)
        # Silent connections far beyond the cap.
        for i in range(60):
            try:
                socks.append(connect(reg, f"127.0.1.{i % 4 + 1}"))
            except OSError:
                pass
        assert healthz(reg, "127.0.2.1") == 200, "a new client cannot reach /healthz at the cap"
        release.set()
        t.join(30)
        assert result["r"].status_code == 202, "the active upload was cut at the cap"
        assert result["r"].headers["Range"] == "0-1999"
    finally:
        for s in socks:
            s.close()
        stop_berth(reg)


def limit_files(soft: int, hard: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return apply


def soft_nofile(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no Max open files line")


def test_the_soft_file_limit_is_raised_to_the_hard_limit(tmp_path):
    reg = start_berth(tmp_path, NO_AUTH, preexec_fn=limit_files(512, 4096))
    try:
        assert soft_nofile(reg.proc.pid) == 4096
    finally:
        stop_berth(reg)


def test_running_out_of_file_descriptors_neither_stops_healthz_nor_spins_the_log(tmp_path):
    # 256 descriptors in all, and the caps set far above them: berth must fit its cap to the
    # descriptors it has instead of failing accept() in a loop.
    reg = start_berth(tmp_path, NO_AUTH, preexec_fn=limit_files(256, 256), env={
        "BERTH_SERVER__MAX_CONNECTIONS": "100000",
        "BERTH_SERVER__MAX_CONNECTIONS_PER_ADDRESS": "100000",
    })
    socks = []
    try:
        for i in range(600):
            try:
                socks.append(connect(reg, f"127.0.3.{i % 8 + 1}"))
            except OSError:
                break
        time.sleep(2)
        assert healthz(reg, "127.0.4.1") == 200
        log = reg.log_path.read_text(errors="replace")
        assert log.count("accept failed") <= 3, "accept errors spin the log"
    finally:
        for s in socks:
            s.close()
        stop_berth(reg)


@pytest.fixture(autouse=True)
def enough_descriptors_here():
    """The test process itself opens hundreds of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    yield
