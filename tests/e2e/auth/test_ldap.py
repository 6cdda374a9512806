"""LDAP sign-in against a real OpenLDAP (docs/auth.md, "LDAP"), through the real berth binary.

One private slapd (tests/e2e/auth/ldap_server.py) and one berth with an `[auth.ldap]` section serve
the module; the tests that take LDAP away start their own pair. Needs slapd (the tests skip
without it, and fail under CI=true) and target/debug/berth (or BERTH_BIN).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import threading
import time
from pathlib import Path

import pytest
import requests

from .ldap_server import (
    ADMINS_DN,
    ALICE_DN,
    BIND_DN,
    BIND_PASSWORD,
    DEVS_DN,
    E2E,
    GROUP_FILTER,
    GROUPS_DN,
    LDAP_INVALID_CREDENTIALS,
    LDAP_SUCCESS,
    PEOPLE_DN,
    USER_FILTER,
    USERS,
    LdapServer,
    ldap_bind,
    start_slapd,
)

TIMEOUT = 30
ADMIN = ("admin", "local-admin-pw-3141")
ALICE = ("alice", USERS["alice"])
BOB = ("bob", USERS["bob"])
CAROL = ("carol", USERS["carol"])
# docs/auth.md: LDAP going away must not hang a login; ~10 s is the bound, plus slack for a loaded machine.
LDAP_DOWN_LIMIT = 12.0

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


# --- fixtures ---------------------------------------------------------------------------------


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string of printable ASCII is a TOML basic string


def write_config(path: Path, ldap_url: str) -> Path:
    ldap = {
        "url": ldap_url,
        "bind_dn": BIND_DN,
        "bind_password": BIND_PASSWORD,
        "user_base_dn": PEOPLE_DN,
        "user_filter": USER_FILTER,
        "group_base_dn": GROUPS_DN,
        "group_filter": GROUP_FILTER,
        "admin_group": ADMINS_DN,
    }
    path.write_text("[auth.ldap]\n" + "".join(f"{k} = {_toml_str(v)}\n" for k, v in ldap.items()))
    return path


def start_ldap_berth(tmp: Path, slapd: LdapServer):
    config = write_config(tmp / "berth.toml", slapd.url)
    return E2E.start_berth(tmp, ["--config", str(config)], {"BERTH_ADMIN_PASSWORD": ADMIN[1]})


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    server = start_slapd(tmp_path_factory.mktemp("slapd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def berth(tmp_path_factory, slapd):
    reg = start_ldap_berth(tmp_path_factory.mktemp("berth-ldap"), slapd)
    yield reg
    E2E.stop_berth(reg)


# --- helpers ----------------------------------------------------------------------------------


def show(r: requests.Response) -> str:
    """One response, for a failure message."""
    challenge = r.headers.get("WWW-Authenticate")
    return (f"{r.request.method} {r.url} -> {r.status_code}"
            + (f" [WWW-Authenticate: {challenge}]" if challenge else "")
            + f" {r.text[:600]!r}")


def berth_log(reg, lines: int = 30) -> str:
    try:
        tail = Path(reg.log_path).read_text(errors="replace").splitlines()[-lines:]
    except (OSError, TypeError):
        return "(no berth log)"
    return "berth log (tail):\n" + "\n".join(tail)


def service_of(reg) -> str:
    """The `service` of the Bearer challenge that an anonymous GET /v2/ answers with."""
    r = requests.get(reg.url + "/v2/", timeout=TIMEOUT)
    assert r.status_code == 401, f"anonymous GET /v2/ must answer 401 (auth is on by default): {show(r)}"
    scheme, _, params = r.headers.get("WWW-Authenticate", "").partition(" ")
    values = dict(re.findall(r'(\w+)="([^"]*)"', params))
    assert scheme.lower() == "bearer" and "service" in values, f"expected a Bearer challenge with a service: {show(r)}"
    return values["service"]


def get_token(reg, creds, *scopes: str) -> requests.Response:
    params = [("service", service_of(reg))] + [("scope", s) for s in scopes]
    return requests.get(reg.url + "/auth/token", params=params, auth=creds, timeout=TIMEOUT)


def token_for(reg, creds, *scopes: str) -> str:
    r = get_token(reg, creds, *scopes)
    assert r.status_code == 200, f"{creds[0]} should get a token for {scopes}: {show(r)}\n{berth_log(reg)}"
    body = r.json()
    token = body.get("token") or body.get("access_token")
    assert token, f"token answer without a token: {body}"
    return token


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def granted(token: str, repo: str) -> set[str]:
    """The actions the token's `access` list grants on one repository."""
    actions: set[str] = set()
    for entry in claims(token).get("access") or []:
        if entry.get("type") == "repository" and entry.get("name") == repo:
            actions.update(entry.get("actions") or [])
    return actions


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def api(reg, method: str, path: str, creds, **kwargs) -> requests.Response:
    return requests.request(method, reg.url + "/api/v1" + path, auth=creds, timeout=TIMEOUT, **kwargs)


def create_project(reg, name: str, public: bool = False) -> None:
    r = api(reg, "POST", "/projects", ADMIN, json={"name": name, "public": public})
    assert r.status_code == 201, f"the local admin should create project {name}: {show(r)}\n{berth_log(reg)}"


def set_member(reg, project: str, kind: str, name: str, role: str) -> None:
    r = api(reg, "PUT", f"/projects/{project}/members", ADMIN, json={"kind": kind, "name": name, "role": role})
    assert 200 <= r.status_code < 300, f"adding {kind} {name} as {role} of {project}: {show(r)}"


def tiny_image(label: str) -> tuple[bytes, bytes, bytes]:
    """(layer tar+gzip, config JSON, manifest JSON) of a one-file image, unique per label."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = f"hello from {label} {os.urandom(8).hex()}\n".encode()
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(layer), "size": len(layer)}],
    }).encode()
    return layer, config, manifest


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def start_upload(reg, repo: str, headers: dict) -> requests.Response:
    return requests.post(f"{reg.url}/v2/{repo}/blobs/uploads/", headers=headers, timeout=TIMEOUT)


def push_blob(reg, repo: str, data: bytes, headers: dict) -> None:
    r = start_upload(reg, repo, headers)
    assert r.status_code == 202, f"starting a blob upload to {repo}: {show(r)}"
    location = r.headers["Location"]
    if not location.startswith("http"):
        location = reg.url + location
    location += ("&" if "?" in location else "?") + "digest=" + sha256(data)
    r = requests.put(location, data=data, headers={**headers, "Content-Type": "application/octet-stream"},
                     timeout=TIMEOUT)
    assert r.status_code == 201, f"finishing a blob upload to {repo}: {show(r)}"


def push_image(reg, repo: str, tag: str, headers: dict) -> tuple[str, bytes]:
    """Pushes a tiny image (blob POST/PUT ?digest=, manifest PUT); (manifest digest, layer)."""
    layer, config, manifest = tiny_image(f"{repo}:{tag}")
    push_blob(reg, repo, layer, headers)
    push_blob(reg, repo, config, headers)
    r = requests.put(f"{reg.url}/v2/{repo}/manifests/{tag}", data=manifest,
                     headers={**headers, "Content-Type": OCI_MANIFEST}, timeout=TIMEOUT)
    assert r.status_code == 201, f"pushing the manifest {repo}:{tag}: {show(r)}"
    return sha256(manifest), layer


def get_manifest(reg, repo: str, tag: str, **kwargs) -> requests.Response:
    return requests.get(f"{reg.url}/v2/{repo}/manifests/{tag}", timeout=TIMEOUT,
                        headers={"Accept": OCI_MANIFEST, **kwargs.pop("headers", {})}, **kwargs)


# --- the directory itself ---------------------------------------------------------------------


def test_slapd_serves_the_test_directory(slapd):
    """The fixture's own check: if this fails, the other failures are about slapd, not berth."""
    for name, password in USERS.items():
        dn = f"uid={name},{PEOPLE_DN}"
        assert ldap_bind(slapd.url, dn, password) == LDAP_SUCCESS, f"{dn} cannot bind:\n{slapd.log_tail()}"
    assert ldap_bind(slapd.url, ALICE_DN, "wrong") == LDAP_INVALID_CREDENTIALS
    assert ldap_bind(slapd.url, BIND_DN, BIND_PASSWORD) == LDAP_SUCCESS


# --- signing in -------------------------------------------------------------------------------


def test_ldap_user_signs_in(berth):
    r = get_token(berth, ALICE)
    assert r.status_code == 200, f"alice (LDAP) should get a token without a scope: {show(r)}\n{berth_log(berth)}"
    body = r.json()
    assert body.get("token") or body.get("access_token"), f"token answer without a token: {body}"
    token = body.get("token") or body.get("access_token")
    assert claims(token).get("sub") == "alice", f"the token's subject should be alice: {claims(token)}"

    r = requests.get(berth.url + "/v2/", auth=ALICE, timeout=TIMEOUT)
    assert r.status_code == 200, f"Basic alice on GET /v2/: {show(r)}"
    r = requests.get(berth.url + "/v2/", headers=bearer(token), timeout=TIMEOUT)
    assert r.status_code == 200, f"alice's token on GET /v2/ (what docker login does next): {show(r)}"

    r = requests.post(berth.url + "/auth/token", timeout=TIMEOUT, data={
        "grant_type": "password", "username": ALICE[0], "password": ALICE[1],
        "service": service_of(berth), "client_id": "berth-tests",
    })
    assert r.status_code == 200, f"OAuth2 password grant for alice: {show(r)}"


def test_ldap_wrong_password_is_401(berth):
    r = get_token(berth, (ALICE[0], "not-alice-pw"))
    assert r.status_code == 401, f"alice with a wrong password must get 401 from /auth/token: {show(r)}"
    r = requests.get(berth.url + "/v2/", auth=(ALICE[0], "not-alice-pw"), timeout=TIMEOUT)
    assert r.status_code == 401, f"alice with a wrong password must get 401 on GET /v2/: {show(r)}"


def test_unknown_user_is_401(berth):
    r = get_token(berth, ("mallory", "mallory-pw"))
    assert r.status_code == 401, f"a name neither local nor in LDAP must get 401: {show(r)}"
    r = requests.get(berth.url + "/v2/", auth=("mallory", "mallory-pw"), timeout=TIMEOUT)
    assert r.status_code == 401, f"a name neither local nor in LDAP must get 401 on GET /v2/: {show(r)}"


@pytest.mark.parametrize("username", ["*", "al*", "alice)(uid=*"])
def test_username_is_escaped_in_the_user_filter(berth, username):
    # Unescaped, each of these would make user_filter find alice, whose password is given.
    r = get_token(berth, (username, ALICE[1]))
    assert r.status_code == 401, (
        f"{username!r} with alice's password must get 401 ({{username}} must be escaped in user_filter): {show(r)}")


# --- groups and roles -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def devproj(berth):
    create_project(berth, "devproj", public=False)
    set_member(berth, "devproj", "group", DEVS_DN, "developer")
    return "devproj"


def test_group_member_pushes_and_pulls(berth, devproj):
    repo = f"{devproj}/app"
    token = token_for(berth, ALICE, f"repository:{repo}:pull,push")
    assert granted(token, repo) == {"pull", "push"}, (
        f"alice is in {DEVS_DN}, a developer of {devproj}: her token should grant pull and push on {repo}; "
        f"claims: {claims(token)}")
    digest, layer = push_image(berth, repo, "v1", bearer(token))

    pull = token_for(berth, ALICE, f"repository:{repo}:pull")
    r = get_manifest(berth, repo, "v1", headers=bearer(pull))
    assert r.status_code == 200, f"alice pulling what she pushed: {show(r)}"
    assert sha256(r.content) == digest and r.headers.get("Docker-Content-Digest") in (None, digest), (
        f"pulled manifest differs from the pushed {digest}: {show(r)}")
    r = requests.get(f"{berth.url}/v2/{repo}/blobs/{sha256(layer)}", headers=bearer(pull), timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == layer, f"alice pulling the layer: {show(r)}"
    r = get_manifest(berth, repo, "v1", auth=ALICE)
    assert r.status_code == 200, f"alice pulling with Basic credentials: {show(r)}"


def test_user_outside_the_group_gets_nothing(berth, devproj):
    repo = f"{devproj}/base"
    push_image(berth, repo, "v1", bearer(token_for(berth, ADMIN, f"repository:{repo}:pull,push")))

    token = token_for(berth, BOB, f"repository:{repo}:pull,push")  # bob's password is right
    assert granted(token, repo) == set(), (
        f"bob is in no group that is a member of private {devproj}: his token must grant nothing; "
        f"claims: {claims(token)}")
    r = start_upload(berth, repo, bearer(token))
    assert r.status_code == 401, f"bob starting an upload to {repo} must be refused with 401: {show(r)}"
    r = get_manifest(berth, repo, "v1", headers=bearer(token))
    assert r.status_code == 401, f"bob pulling {repo}:v1 with his token must get 401: {show(r)}"
    r = get_manifest(berth, repo, "v1", auth=BOB)
    # Signed in (his password is right) but without the right: 403 DENIED, as docs/auth.md says.
    assert r.status_code == 403, f"bob pulling {repo}:v1 with Basic credentials must get 403: {show(r)}"


def test_group_dns_compare_case_insensitively(berth):
    create_project(berth, "casedproj", public=False)
    set_member(berth, "casedproj", "group", DEVS_DN.upper(), "guest")
    repo = "casedproj/app"
    token = token_for(berth, ALICE, f"repository:{repo}:pull,push")
    assert granted(token, repo) == {"pull"}, (
        f"the member {DEVS_DN.upper()!r} (guest) is alice's group {DEVS_DN!r} in other case: she should get "
        f"pull, and not push; claims: {claims(token)}")


def test_admin_group_member_is_a_registry_admin(berth):
    r = api(berth, "GET", "/me", CAROL)
    assert r.status_code == 200, f"GET /api/v1/me as carol: {show(r)}\n{berth_log(berth)}"
    me = r.json()
    assert (me.get("name"), me.get("kind"), me.get("admin")) == ("carol", "user", True), (
        f"carol is in admin_group {ADMINS_DN}: /me should say she is an admin user: {me}")
    r = api(berth, "GET", "/users", CAROL)
    assert r.status_code == 200, f"carol (registry admin through LDAP) listing users: {show(r)}"

    r = api(berth, "GET", "/me", ALICE)
    assert r.status_code == 200 and r.json().get("admin") is False, f"alice is no admin: {show(r)}"
    r = api(berth, "GET", "/users", ALICE)
    assert r.status_code in (401, 403), f"alice (not in admin_group) must not list users: {show(r)}"


def test_ldap_user_gets_a_user_row_with_source_ldap(berth):
    token_for(berth, ALICE)
    r = api(berth, "GET", "/users/alice", ADMIN)
    assert r.status_code == 200, f"GET /api/v1/users/alice as the local admin after alice signed in: {show(r)}"
    user = r.json()
    assert user.get("name") == "alice" and user.get("source") == "ldap", (
        f"alice's row should say source \"ldap\": {user}")


def test_ldap_passwords_never_reach_the_disk(berth):
    token_for(berth, ALICE)
    token_for(berth, CAROL)
    get_token(berth, (BOB[0], "bobs-wrong-password"))
    time.sleep(2.5)  # the audit writer flushes once a second
    secrets = [p.encode() for p in (*USERS.values(), "bobs-wrong-password", BIND_PASSWORD)]
    found = []
    for path in [*Path(berth.data_dir).rglob("*"), Path(berth.log_path)]:
        if path.is_file():
            data = path.read_bytes()
            found += [f"{s.decode()!r} in {path}" for s in secrets if s in data]
    assert not found, f"LDAP passwords must never be stored, audited or logged: {found}"


# --- LDAP going away --------------------------------------------------------------------------


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
def test_ldap_outage_fails_fast_and_local_admin_still_signs_in(tmp_path, outage):
    """stopped: connections are refused. frozen (SIGSTOP): they are accepted and never answered."""
    slapd = start_slapd(tmp_path)
    reg = None
    try:
        reg = start_ldap_berth(tmp_path, slapd)
        token_for(reg, ALICE)  # LDAP works in this configuration before it goes away
        if outage == "stopped":
            slapd.stop()
        else:
            slapd.freeze()

        result = {}

        def bob_login():
            started = time.monotonic()
            try:
                result["response"] = get_token(reg, BOB)
            except requests.RequestException as e:
                result["error"] = e
            result["elapsed"] = time.monotonic() - started

        bob = threading.Thread(target=bob_login)
        bob.start()
        time.sleep(0.5)
        # While bob's LDAP check is pending (or failed), a local user does not need LDAP.
        started = time.monotonic()
        r = get_token(reg, ADMIN)
        admin_elapsed = time.monotonic() - started
        assert r.status_code == 200, f"the local admin must sign in with LDAP {outage}: {show(r)}\n{berth_log(reg)}"
        assert admin_elapsed < 5, f"the local admin's sign-in took {admin_elapsed:.1f}s with LDAP {outage}"
        r = requests.get(reg.url + "/v2/", auth=ADMIN, timeout=TIMEOUT)
        assert r.status_code == 200, f"Basic admin on GET /v2/ with LDAP {outage}: {show(r)}"

        bob.join(TIMEOUT + 5)
        assert "error" not in result, f"bob's sign-in with LDAP {outage} did not get an answer: {result.get('error')}"
        r = result["response"]
        assert r.status_code in (401, 503), f"bob's sign-in with LDAP {outage} must fail with 401 or 503: {show(r)}"
        assert result["elapsed"] < LDAP_DOWN_LIMIT, (
            f"bob's sign-in with LDAP {outage} took {result['elapsed']:.1f}s (limit {LDAP_DOWN_LIMIT}s)")
    finally:
        slapd.thaw()
        if reg is not None:
            E2E.stop_berth(reg)
        slapd.stop()
