"""A private OpenLDAP server for the LDAP tests: `start_slapd(tmp_path) -> LdapServer`.

It runs Debian's `slapd` (scripts/install-test-deps.sh installs it; a missing slapd fails under
CI=true and skips elsewhere) on a free 127.0.0.1 port, with everything in `tmp_path`: a
slapd.conf, an mdb database loaded with `slapd -T add` before the start, the pid file and the log
(`slapd.log`, at the `stats` level: every connection, bind and search). The system slapd is
never used.

The directory (suffix dc=berth,dc=test):

    cn=admin,dc=berth,dc=test           rootdn, password adminpw; Berth binds as it to search
    ou=people                           inetOrgPerson entries with uid
        uid=alice  alice-pw
        uid=bob    bob-pw
        uid=carol  carol-pw
    ou=groups                           groupOfNames
        cn=devs             member alice
        cn=registry-admins  member carol

Anonymous clients may only bind (no search), so a Berth that forgot its bind_dn finds nobody.

`ldap_bind(url, dn, password)` is a plain-socket LDAP simple bind (no ldap-utils needed); the
startup waits with it until the rootdn can bind.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def _e2e_conftest():
    """tests/e2e/conftest.py (`require_tool`, `start_berth`, ...), as pytest loaded it."""
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    loaded = sys.modules.get("conftest")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path:
        return loaded
    spec = importlib.util.spec_from_file_location("berth_e2e_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


E2E = _e2e_conftest()

SUFFIX = "dc=berth,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "adminpw"
# The account Berth binds with to search: the rootdn (read access to everything).
BIND_DN = ROOT_DN
BIND_PASSWORD = ROOT_PASSWORD
PEOPLE_DN = f"ou=people,{SUFFIX}"
GROUPS_DN = f"ou=groups,{SUFFIX}"

USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
ALICE_DN = f"uid=alice,{PEOPLE_DN}"
BOB_DN = f"uid=bob,{PEOPLE_DN}"
CAROL_DN = f"uid=carol,{PEOPLE_DN}"
DEVS_DN = f"cn=devs,{GROUPS_DN}"
ADMINS_DN = f"cn=registry-admins,{GROUPS_DN}"
GROUPS = {DEVS_DN: [ALICE_DN], ADMINS_DN: [CAROL_DN]}

USER_FILTER = "(&(objectClass=inetOrgPerson)(uid={username}))"
GROUP_FILTER = "(&(objectClass=groupOfNames)(member={dn}))"

LDAP_SUCCESS = 0
LDAP_INVALID_CREDENTIALS = 49

_SLAPD_PLACES = ["/usr/sbin/slapd", "/usr/local/sbin/slapd", "/usr/libexec/slapd", "/usr/local/libexec/slapd"]
_SCHEMA_DIRS = ["/etc/ldap/schema", "/etc/openldap/schema", "/usr/local/etc/openldap/schema"]
_MODULE_DIRS = ["/usr/lib/ldap", "/usr/lib/openldap", "/usr/lib64/openldap", "/usr/libexec/openldap",
                "/usr/local/libexec/openldap"]


def find_slapd() -> str:
    """slapd's path; it is in /usr/sbin, which is not on a normal user's PATH."""
    found = shutil.which("slapd")
    if found:
        return found
    for place in _SLAPD_PLACES:
        if os.access(place, os.X_OK):
            return place
    return E2E.require_tool("slapd")  # fails under CI=true, skips elsewhere


def ssha(password: str) -> str:
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def directory_ldif() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: berth\no: Berth tests\n",
        f"dn: {PEOPLE_DN}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: {GROUPS_DN}\nobjectClass: organizationalUnit\nou: groups\n",
    ]
    for uid, password in USERS.items():
        entries.append(
            f"dn: uid={uid},{PEOPLE_DN}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid.title()}\n"
            f"sn: {uid.title()}\nmail: {uid}@berth.test\nuserPassword: {ssha(password)}\n"
        )
    for group_dn, members in GROUPS.items():
        cn = group_dn.split(",", 1)[0].split("=", 1)[1]
        entries.append(
            f"dn: {group_dn}\nobjectClass: groupOfNames\ncn: {cn}\n" + "".join(f"member: {m}\n" for m in members)
        )
    return "\n".join(entries)


def _slapd_conf(work: Path) -> str:
    schema_dir = next((d for d in _SCHEMA_DIRS if Path(d, "inetorgperson.schema").exists()), None)
    if schema_dir is None:
        raise RuntimeError(f"OpenLDAP schema files not found in any of {_SCHEMA_DIRS}")
    module_dir = next((d for d in _MODULE_DIRS if list(Path(d).glob("back_mdb*"))), None)
    lines = [f"include {schema_dir}/{name}.schema" for name in ("core", "cosine", "inetorgperson")]
    if module_dir is not None:  # otherwise mdb is built into slapd
        lines += [f"modulepath {module_dir}", "moduleload back_mdb"]
    lines += [
        f"pidfile {work}/slapd.pid",
        f"argsfile {work}/slapd.args",
        "",
        "database mdb",
        "maxsize 67108864",
        f'suffix "{SUFFIX}"',
        f'rootdn "{ROOT_DN}"',
        f"rootpw {ssha(ROOT_PASSWORD)}",
        f"directory {work}/db",
        "index objectClass,uid,member eq",
        "access to attrs=userPassword by anonymous auth by self read by * none",
        "access to * by users read by * none",
        "",
    ]
    return "\n".join(lines)


# --- a minimal LDAP client: simple bind only ------------------------------------------------


def _ber(tag: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + payload


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("LDAP server closed the connection")
        data += chunk
    return data


def _read_tlv(sock: socket.socket) -> tuple[int, bytes]:
    tag, first = _recv_exact(sock, 2)
    if first & 0x80:
        length = int.from_bytes(_recv_exact(sock, first & 0x7F), "big")
    else:
        length = first
    return tag, _recv_exact(sock, length)


def _split_tlvs(data: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i < len(data):
        tag, first = data[i], data[i + 1]
        i += 2
        if first & 0x80:
            k = first & 0x7F
            length = int.from_bytes(data[i : i + k], "big")
            i += k
        else:
            length = first
        out.append((tag, data[i : i + length]))
        i += length
    return out


def _host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[1].rstrip("/")
    host, _, port = rest.rpartition(":")
    return host, int(port)


def ldap_bind(url: str, dn: str, password: str, timeout: float = 5.0) -> int:
    """LDAP result code of a simple bind (0 success, 49 invalid credentials)."""
    with socket.create_connection(_host_port(url), timeout=timeout) as sock:
        bind = _ber(0x02, b"\x03") + _ber(0x04, dn.encode()) + _ber(0x80, password.encode())
        sock.sendall(_ber(0x30, _ber(0x02, b"\x01") + _ber(0x60, bind)))
        tag, message = _read_tlv(sock)
        parts = _split_tlvs(message)
        if tag != 0x30 or len(parts) < 2 or parts[1][0] != 0x61:
            raise ConnectionError(f"not an LDAP bind response: {message!r}")
        code = _split_tlvs(parts[1][1])[0][1]
        sock.sendall(_ber(0x30, _ber(0x02, b"\x02") + b"\x42\x00"))  # unbind
        return int.from_bytes(code, "big")


# --- the server -------------------------------------------------------------------------------


@dataclass
class LdapServer:
    url: str  # ldap://127.0.0.1:PORT
    port: int
    work_dir: Path
    log_path: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _log: object = field(default=None, repr=False)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no slapd log)"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def freeze(self) -> None:
        """SIGSTOP: the kernel still accepts connections, but nothing ever answers."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.running:
            self.thaw()  # a stopped process would not handle SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def start_slapd(tmp_path: Path, timeout: float = 20.0) -> LdapServer:
    """Starts a private slapd under `tmp_path`, loaded with the directory above."""
    slapd = find_slapd()
    work = Path(tmp_path) / "slapd"
    (work / "db").mkdir(parents=True, exist_ok=True)
    conf = work / "slapd.conf"
    conf.write_text(_slapd_conf(work))
    ldif = work / "directory.ldif"
    ldif.write_text(directory_ldif())
    load = subprocess.run([slapd, "-T", "add", "-q", "-f", str(conf), "-l", str(ldif)],
                          capture_output=True, text=True, timeout=60)
    if load.returncode != 0:
        raise RuntimeError(f"slapd -T add failed ({load.returncode}):\n{load.stdout}{load.stderr}\n{conf.read_text()}")

    port = E2E.free_port()
    url = f"ldap://127.0.0.1:{port}"
    log_path = work / "slapd.log"
    log = open(log_path, "wb")
    # -d keeps slapd in the foreground (so the Popen is slapd itself) and logs to stderr.
    proc = subprocess.Popen([slapd, "-d", "256", "-f", str(conf), "-h", url + "/"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = LdapServer(url=url, port=port, work_dir=work, log_path=log_path, proc=proc, _log=log)
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        if proc.poll() is not None:
            server.stop()
            raise RuntimeError(f"slapd exited with {proc.returncode} at startup; log:\n{server.log_tail()}")
        try:
            code = ldap_bind(url, ROOT_DN, ROOT_PASSWORD, timeout=2)
            if code == LDAP_SUCCESS:
                return server
            last_error = f"rootdn bind answered LDAP result {code}"
        except OSError as e:
            last_error = e
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"slapd did not answer on {url} within {timeout}s ({last_error}); log:\n"
                               f"{server.log_tail()}")
        time.sleep(0.1)
