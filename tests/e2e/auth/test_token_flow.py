"""The token protocol and authorization of docs/auth.md, black-box, against a real `berth serve`.

The module starts one authenticated berth (admin password in BERTH_ADMIN_PASSWORD) with three
projects: `p1` and `p2` private, `pub` public, each with one image (`p1/app:v1`,
`p2/secret:v1`, `pub/img:v1`), and two users: `guest1` (guest of p1) and `dev1` (developer of
p1). Tests that lock accounts out start their own berth, so the per-address failure count of
the shared one stays low. The audit test runs last: it also checks that no secret used by the
earlier tests (collected in SECRETS) shows up in the audit log.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

import pytest
import requests

from conftest import start_berth, stop_berth

from .helpers import (
    CATALOG_SCOPE,
    Admin,
    AutoClient,
    Client,
    Image,
    b64url_encode,
    catalog,
    challenge,
    decode_jwt,
    fetch_token,
    granted,
    new_secret,
    oauth_token,
    parse_challenge,
    pull_image,
    push_image,
    repo_actions,
    scope,
    token_response,
    unique,
)

# Every password and robot secret the tests use; none may appear in the audit log.
SECRETS: set[str] = set()


@dataclass
class World:
    url: str
    service: str
    admin: Admin
    admin_creds: tuple[str, str]
    guest: tuple[str, str]
    dev: tuple[str, str]
    images: dict[str, Image]  # "p1/app", "p2/secret", "pub/img" -> the image tagged v1 there

    def client(self, creds=None, scopes=(), token: str | None = None) -> Client:
        """A Client with a token for `scopes` fetched with `creds` (None: anonymous)."""
        return Client(self.url, token=token or fetch_token(self.url, creds, scopes))

    def basic(self, creds) -> Client:
        return Client(self.url, basic=creds)


def start_authenticated(tmp, **env):
    password = new_secret()
    SECRETS.add(password)
    reg = start_berth(tmp, env={"BERTH_ADMIN_PASSWORD": password, **env})
    assert reg.creds == ("admin", password)
    return reg


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    # Pull events are one row per caller, artifact and audit.pull_bucket, written when it is
    # over: a short bucket lets test_audit_log see the pull within seconds.
    reg = start_authenticated(tmp_path_factory.mktemp("auth"), BERTH_AUDIT__PULL_BUCKET="1s")
    try:
        admin = Admin(reg.url, reg.creds)
        admin.create_project("p1")
        admin.create_project("p2")
        admin.create_project("pub", public=True)
        guest = ("guest1", new_secret())
        dev = ("dev1", new_secret())
        for name, password in (guest, dev):
            SECRETS.add(password)
            admin.create_user(name, password)
        admin.set_member("p1", guest[0], "guest")
        admin.set_member("p1", dev[0], "developer")
        as_admin = Client(reg.url, basic=reg.creds)  # Basic credentials directly on /v2/
        images = {repo: push_image(as_admin, repo, "v1") for repo in ("p1/app", "p2/secret", "pub/img")}
        service = challenge(reg.url).get("service", "")
        yield World(reg.url, service, admin, reg.creds, guest, dev, images)
    finally:
        stop_berth(reg)


def assert_insufficient_scope(r: requests.Response, what: str) -> None:
    assert r.status_code == 401, f"{what}: {r.status_code} {r.text[:300]}"
    scheme, params = parse_challenge(r.headers.get("WWW-Authenticate", ""))
    assert scheme == "bearer", f"{what}: WWW-Authenticate {r.headers.get('WWW-Authenticate')!r}"
    assert params.get("error") == "insufficient_scope", \
        f"{what}: a token was presented, so the challenge says error=\"insufficient_scope\": {params}"


# --- challenge and token endpoint ------------------------------------------------------------


def test_v2_base_challenges_every_anonymous_request(world):
    # `pub` is public, and still GET /v2/ answers 401 to an anonymous caller (docker login and
    # the clients' auth discovery depend on it).
    r = requests.get(world.url + "/v2/", timeout=30)
    assert r.status_code == 401
    scheme, params = parse_challenge(r.headers.get("WWW-Authenticate", ""))
    assert scheme == "bearer", r.headers.get("WWW-Authenticate")
    assert params.get("realm", "").startswith(("http://", "https://")), f"absolute realm URL: {params}"
    assert params["realm"].endswith("/auth/token"), params
    assert params.get("service"), params

    # The realm is reachable and hands an anonymous caller a token.
    r = requests.get(params["realm"], params={"service": params["service"]}, timeout=30)
    assert r.status_code == 200, f"GET {params['realm']}: {r.status_code} {r.text[:300]}"
    assert r.json().get("token")

    # Berth lets an anonymous caller pull from a public project even without a token (clients
    # fetch one anyway after the 401 on /v2/); a private repository names the scope it needs.
    r = requests.get(f"{world.url}/v2/pub/img/manifests/v1", timeout=30)
    assert r.status_code == 200, f"anonymous pull from a public project: {r.status_code}"
    r = requests.get(f"{world.url}/v2/p1/app/manifests/v1", timeout=30)
    assert r.status_code == 401, "an anonymous pull from a private project is refused"
    scheme, params = parse_challenge(r.headers.get("WWW-Authenticate", ""))
    assert scheme == "bearer" and params.get("scope") == "repository:p1/app:pull", params


def test_token_without_scope_checks_the_password(world):
    user, password = world.dev
    r = token_response(world.url, (user, "not-" + password))
    assert r.status_code == 401, f"a wrong password gets no token: {r.status_code} {r.text[:300]}"
    assert '"token"' not in r.text and '"access_token"' not in r.text, r.text[:300]

    r = token_response(world.url, world.dev)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"] and body["access_token"], body
    assert isinstance(body["expires_in"], int) and body["expires_in"] >= 300, body
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", body["issued_at"]), body

    header, claims = decode_jwt(body["token"])
    assert header.get("alg") == "HS256", header
    assert header.get("kid"), f"the JWT header names its key: {header}"
    assert claims.get("iss") == "berth", claims
    aud = claims.get("aud")
    assert aud == world.service or (isinstance(aud, list) and world.service in aud), claims
    assert claims.get("sub") == user, claims
    assert claims["exp"] - time.time() >= 290, claims
    assert not granted(claims), f"no scope asked, no access granted: {claims.get('access')}"


def test_several_scopes_in_one_request(world):
    token = fetch_token(world.url, world.admin_creds,
                        [scope("p1/app", "pull"), scope("p2/secret", "pull", "push"), scope("pub/img", "pull")])
    access = granted(token)
    assert access.get(("repository", "p1/app")) == {"pull"}, access
    assert access.get(("repository", "p2/secret")) == {"pull", "push"}, access
    assert access.get(("repository", "pub/img")) == {"pull"}, access
    assert len(decode_jwt(token)[1]["access"]) >= 3


def test_oauth2_password_and_refresh_token_grants(world):
    user, password = world.dev
    r = oauth_token(world.url, {"grant_type": "password", "username": user, "password": "not-" + password,
                                "scope": scope("p1/app", "pull")})
    assert r.status_code == 401, f"wrong password in the OAuth2 form: {r.status_code} {r.text[:300]}"

    r = oauth_token(world.url, {
        "grant_type": "password", "username": user, "password": password, "access_type": "offline",
        "scope": f"{scope('p1/app', 'pull')} {scope('pub/img', 'pull')}",  # space-separated
    })
    assert r.status_code == 200, r.text
    body = r.json()
    assert body.get("refresh_token"), f"access_type=offline asks for a refresh token: {body}"
    assert body["expires_in"] >= 300 and body["issued_at"], body
    access = granted(body["access_token"])
    assert access.get(("repository", "p1/app")) == {"pull"} and access.get(("repository", "pub/img")) == {"pull"}
    SECRETS.add(body["refresh_token"])

    r = oauth_token(world.url, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
                                "scope": scope("p1/app", "pull")})
    assert r.status_code == 200, r.text
    fresh = r.json()["access_token"]
    assert repo_actions(fresh, "p1/app") == {"pull"}
    assert decode_jwt(fresh)[1].get("sub") == user
    pull_image(world.client(token=fresh), "p1/app", "v1", world.images["p1/app"])

    r = oauth_token(world.url, {"grant_type": "refresh_token", "refresh_token": "garbage." + new_secret(),
                                "scope": scope("p1/app", "pull")})
    assert r.status_code == 401, f"a garbage refresh token: {r.status_code} {r.text[:300]}"


# --- what a token grants ---------------------------------------------------------------------


def test_push_asked_by_a_guest_grants_only_pull(world):
    token = fetch_token(world.url, world.guest, [scope("p1/app", "pull", "push")])
    assert granted(token) == {("repository", "p1/app"): {"pull"}}, decode_jwt(token)[1].get("access")
    c = world.client(token=token)
    pull_image(c, "p1/app", "v1", world.images["p1/app"])
    assert_insufficient_scope(c.post("/v2/p1/app/blobs/uploads/"), "guest starts an upload")
    image = world.images["p1/app"]
    r = c.put("/v2/p1/app/manifests/guest", data=image.manifest,
              headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert_insufficient_scope(r, "guest pushes a manifest")


def test_developer_pushes_and_pulls_with_a_token(world):
    repo = unique("p1/dev")
    token = fetch_token(world.url, world.dev, [scope(repo, "pull", "push")])
    assert repo_actions(token, repo) == {"pull", "push"}
    c = world.client(token=token)
    image = push_image(c, repo, "v1")
    pull_image(c, repo, "v1", image)
    pull_image(c, repo, image.digest, image)
    # No delete for a developer.
    r = c.delete(f"/v2/{repo}/manifests/{image.digest}")
    assert r.status_code == 401, f"developer deletes: {r.status_code}"
    # The docker-like flow (challenge, token, retry) with the same user.
    pull_image(AutoClient(world.url, world.dev), repo, "v1", image)


def test_anonymous_token_grants_pull_on_public_projects_only(world):
    token = fetch_token(world.url, None, [scope("pub/img", "pull"), scope("p1/app", "pull")])
    assert repo_actions(token, "pub/img") == {"pull"}
    assert repo_actions(token, "p1/app") == set(), decode_jwt(token)[1].get("access")
    c = world.client(token=token)
    pull_image(c, "pub/img", "v1", world.images["pub/img"])
    assert c.get("/v2/p1/app/manifests/v1").status_code == 401
    assert c.get(f"/v2/p1/app/blobs/{world.images['p1/app'].layer_digest}").status_code == 401
    # The way docker does it: challenge, anonymous token, retry.
    pull_image(AutoClient(world.url), "pub/img", "v1", world.images["pub/img"])


def test_anonymous_push_is_always_refused(world):
    token = fetch_token(world.url, None, [scope("pub/img", "pull", "push"), scope("pub/new", "pull", "push")])
    assert repo_actions(token, "pub/img") == {"pull"}
    assert "push" not in repo_actions(token, "pub/new")
    c = world.client(token=token)
    assert_insufficient_scope(c.post("/v2/pub/img/blobs/uploads/"), "anonymous upload with a token")
    assert_insufficient_scope(c.post("/v2/pub/new/blobs/uploads/"), "anonymous upload to a new repository")
    r = requests.post(f"{world.url}/v2/pub/img/blobs/uploads/", timeout=30)
    assert r.status_code == 401
    r = requests.delete(f"{world.url}/v2/pub/img/manifests/{world.images['pub/img'].digest}", timeout=30)
    assert r.status_code == 401
    assert AutoClient(world.url).post("/v2/pub/img/blobs/uploads/").status_code == 401


def test_tampered_tokens_are_refused(world):
    token = fetch_token(world.url, world.admin_creds, [scope("p1/app", "pull")])
    path = "/v2/p1/app/manifests/v1"
    assert world.client(token=token).get(path).status_code == 200
    head, payload, sig = token.split(".")

    i = len(sig) // 2  # a middle character: all six of its bits are signature bits
    bad_sig = f"{head}.{payload}.{sig[:i]}{'A' if sig[i] != 'A' else 'B'}{sig[i + 1:]}"
    assert world.client(token=bad_sig).get(path).status_code == 401, "one character of the signature changed"

    header, claims = decode_jwt(token)
    other_aud = {**claims, "aud": "some-other-registry"}
    forged = f"{head}.{b64url_encode(json.dumps(other_aud).encode())}.{sig}"
    assert world.client(token=forged).get(path).status_code == 401, "the payload (aud) was edited"

    more = {**claims, "access": [{"type": "repository", "name": "p2/secret", "actions": ["pull", "push"]}]}
    forged = f"{head}.{b64url_encode(json.dumps(more).encode())}.{sig}"
    assert world.client(token=forged).get("/v2/p2/secret/manifests/v1").status_code == 401, \
        "the payload (access) was edited"

    unsigned = f"{b64url_encode(json.dumps({**header, 'alg': 'none'}).encode())}.{payload}."
    assert world.client(token=unsigned).get(path).status_code == 401, "alg none"

    assert world.client(token="not-a-jwt").get(path).status_code == 401


# --- robots and disabled users ---------------------------------------------------------------


def test_robot_account(world):
    name = unique("ci")
    body = world.admin.create_robot(name, [{"project": "p1", "actions": ["pull"]}])
    assert body["name"] == f"robot${name}", body
    secret = body["secret"]
    assert secret, body
    SECRETS.add(secret)
    creds = (body["name"], secret)
    listing = world.admin.client.get("/api/v1/robots")
    assert listing.status_code == 200 and secret not in listing.text, "the secret is shown once, at creation"

    token = fetch_token(world.url, creds, [scope("p1/app", "pull", "push"), scope("p2/secret", "pull")])
    assert repo_actions(token, "p1/app") == {"pull"}, decode_jwt(token)[1].get("access")
    assert repo_actions(token, "p2/secret") == set(), decode_jwt(token)[1].get("access")
    c = world.client(token=token)
    pull_image(c, "p1/app", "v1", world.images["p1/app"])
    assert_insufficient_scope(c.post("/v2/p1/app/blobs/uploads/"), "pull-only robot pushes to p1")
    assert c.get("/v2/p2/secret/manifests/v1").status_code == 401, "robot pulls from p2"

    # Basic credentials directly on /v2/ work for robots too.
    basic = world.basic(creds)
    assert basic.get("/v2/p1/app/manifests/v1").status_code == 200
    # Signed in with Basic credentials but without the right: 403 DENIED (docs/auth.md).
    assert basic.get("/v2/p2/secret/manifests/v1").status_code == 403
    me = basic.get("/api/v1/me")
    assert me.status_code == 200 and me.json().get("kind") == "robot" and me.json().get("admin") is False, me.text

    world.admin.delete_robot(name)
    assert c.get("/v2/p1/app/manifests/v1").status_code == 401, "a deleted robot's token stops working at once"
    assert basic.get("/v2/p1/app/manifests/v1").status_code == 401, "and so do its Basic credentials"
    assert token_response(world.url, creds).status_code == 401, "and it cannot log in"


def test_disabled_user(world):
    name, password = unique("leaver"), new_secret()
    SECRETS.add(password)
    world.admin.create_user(name, password)
    world.admin.set_member("p1", name, "developer")
    token = fetch_token(world.url, (name, password), [scope("p1/app", "pull")])
    c = world.client(token=token)
    assert c.get("/v2/p1/app/manifests/v1").status_code == 200
    assert world.basic((name, password)).get("/v2/p1/app/manifests/v1").status_code == 200  # now cached

    world.admin.update_user(name, disabled=True)
    assert token_response(world.url, (name, password)).status_code == 401, "a disabled user cannot log in"
    assert c.get("/v2/p1/app/manifests/v1").status_code == 401, "a disabled user's token stops working at once"
    assert world.basic((name, password)).get("/v2/p1/app/manifests/v1").status_code == 401, \
        "nor do cached Basic credentials"


# --- catalog and mounts ----------------------------------------------------------------------


def test_catalog_lists_only_pullable_repositories(world):
    dev_token = fetch_token(world.url, world.dev, [CATALOG_SCOPE])
    repos = catalog(world.client(token=dev_token))
    assert "p1/app" in repos, repos
    assert "p2/secret" not in repos, repos
    # dev1 may pull p1 (developer) and pub (public), nothing else.
    assert all(r.split("/", 1)[0] in ("p1", "pub") for r in repos), repos

    admin_token = fetch_token(world.url, world.admin_creds, [CATALOG_SCOPE])
    repos = catalog(world.client(token=admin_token))
    assert {"p1/app", "p2/secret", "pub/img"} <= set(repos), repos


def test_mount_from_an_unreadable_repository_opens_an_upload_session(world):
    secret_layer = world.images["p2/secret"].layer_digest
    target = unique("p1/mnt")
    c = world.client(world.dev, [scope(target, "pull", "push"), scope("p2/secret", "pull")])
    r = c.post(f"/v2/{target}/blobs/uploads/", params={"mount": secret_layer, "from": "p2/secret"})
    assert r.status_code == 202, f"mount from p2 which dev1 cannot pull: {r.status_code} {r.text[:300]}"
    assert r.headers.get("Location"), "an upload session instead"
    r = c.post(f"/v2/{target}/blobs/uploads/", params={"mount": secret_layer})
    assert r.status_code == 202, f"automatic mount of a blob only p2 holds: {r.status_code} {r.text[:300]}"
    assert world.basic(world.admin_creds).head(f"/v2/{target}/blobs/{secret_layer}").status_code == 404
    assert c.get(f"/v2/{target}/blobs/{secret_layer}").status_code == 404

    # From a repository dev1 may pull, the same request mounts.
    readable = world.images["p1/app"].layer_digest
    other = unique("p1/mnt")
    c = world.client(world.dev, [scope(other, "pull", "push"), scope("p1/app", "pull")])
    r = c.post(f"/v2/{other}/blobs/uploads/", params={"mount": readable, "from": "p1/app"})
    assert r.status_code == 201, f"mount from readable p1/app: {r.status_code} {r.text[:300]}"
    assert c.head(f"/v2/{other}/blobs/{readable}").status_code == 200


# --- brute force -----------------------------------------------------------------------------


def test_repeated_failures_lock_the_user_and_address_pair_only(tmp_path):
    reg = start_authenticated(tmp_path)
    try:
        admin = Admin(reg.url, reg.creds)
        victim, bystander = ("victim", new_secret()), ("bystander", new_secret())
        for name, password in (victim, bystander):
            SECRETS.add(password)
            admin.create_user(name, password)
        statuses = [token_response(reg.url, (victim[0], f"wrong-{i}")).status_code for i in range(7)]
        assert statuses[:5] == [401] * 5, statuses
        assert 429 in statuses[5:], f"auth.max_failures (5) failures, then 429: {statuses}"
        first = statuses.index(429)
        assert all(s == 429 for s in statuses[first:]), statuses

        r = token_response(reg.url, victim)
        assert r.status_code == 429, f"the locked pair stays locked, right password or not: {r.status_code}"
        assert "TOOMANYREQUESTS" in r.text, r.text[:300]
        # Another user from the same address (far fewer failures than 4 x 5) still logs in.
        r = token_response(reg.url, bystander)
        assert r.status_code == 200, f"bystander: {r.status_code} {r.text[:300]}"
        assert Client(reg.url, basic=reg.creds).get("/api/v1/me").status_code == 200
    finally:
        stop_berth(reg)


# --- admin API -------------------------------------------------------------------------------


def test_admin_api_authorization(world):
    dev = world.basic(world.dev)
    r = dev.post("/api/v1/users", json={"name": unique("intruder"), "password": new_secret(), "admin": True})
    assert r.status_code == 403, f"a non-admin creates a user: {r.status_code} {r.text[:300]}"
    assert requests.get(world.url + "/api/v1/users", timeout=30).status_code == 401

    me = dev.get("/api/v1/me")
    assert me.status_code == 200, me.text
    me = me.json()
    assert (me.get("name"), me.get("kind"), me.get("admin")) == (world.dev[0], "user", False), me

    # A Bearer token from /auth/token works on the admin API as well as Basic credentials.
    token = fetch_token(world.url, world.admin_creds)
    users = world.client(token=token).get("/api/v1/users")
    assert users.status_code == 200, users.text
    assert world.dev[0] in users.text

    # Anyone may list projects, and sees the ones they may pull.
    r = requests.get(world.url + "/api/v1/projects", timeout=30)
    assert r.status_code == 200, r.text
    names = {p["name"] for p in r.json()}
    assert "pub" in names and not names & {"p1", "p2"}, names

    r = world.basic(world.admin_creds).get("/api/v1/openapi.json")
    assert r.status_code == 200, r.text[:300]
    paths = r.json().get("paths", {})
    assert "/api/v1/projects" in paths and "/api/v1/audit" in paths, sorted(paths)


# --- audit (last: it checks the secrets every earlier test used) -----------------------------


def resource_has(text: str):
    return lambda e: text in (e.get("resource") or "")


def test_audit_log(world):
    dev_name = world.dev[0]
    repo, tag = unique("p1/audited"), "t1"
    c = world.client(world.dev, [scope(repo, "pull", "push")])
    image = push_image(c, repo, tag)
    r = c.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 200
    assert world.basic(world.admin_creds).delete(f"/v2/{repo}/manifests/{image.digest}").status_code == 202
    wrong = "wrong-" + new_secret()
    SECRETS.add(wrong)
    assert token_response(world.url, (dev_name, wrong)).status_code == 401
    newcomer, newcomer_password = unique("newcomer"), new_secret()
    SECRETS.add(newcomer_password)
    world.admin.create_user(newcomer, newcomer_password)
    world.admin.set_member("p1", newcomer, "guest")

    admin = world.admin
    push = admin.wait_audit(resource_has(repo), action="push")
    assert push["actor"] == dev_name and push["result"] == "success", push
    assert "127.0.0.1" in (push.get("source") or ""), f"the source address is recorded: {push}"
    pull = admin.wait_audit(resource_has(repo), action="pull")
    assert pull["actor"] == dev_name and pull["result"] == "success", pull
    delete = admin.wait_audit(resource_has(repo), action="delete")
    assert delete["actor"] == "admin" and delete["result"] == "success", delete
    failed = admin.wait_audit(lambda e: e.get("actor") == dev_name and e.get("result") == "failure", action="login")
    assert failed["action"] == "login", failed
    created = admin.wait_audit(resource_has(newcomer), action="user.create")
    assert created["actor"] == "admin" and created["result"] == "success", created
    admin.wait_audit(resource_has(newcomer), action="member.set")
    admin.wait_audit(resource_has("p1"), action="project.create")

    r = world.basic(world.dev).get("/api/v1/audit")
    assert r.status_code == 403, f"a non-admin reads the audit log: {r.status_code}"
    assert requests.get(world.url + "/api/v1/audit", timeout=30).status_code == 401

    # Every page of the log: no password, robot secret or refresh token of this module anywhere.
    pages, params = [], {}
    for _ in range(100):
        r = admin.client.get("/api/v1/audit", params=params)
        assert r.status_code == 200, r.text[:300]
        pages.append(r.text)
        nxt = r.json().get("next")
        if not nxt:
            break
        params = {"before": nxt}
    text = "\n".join(pages)
    assert newcomer in text
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"{len(leaked)} secret(s) appear in the audit log"
