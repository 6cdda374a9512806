"""Small clients for the token protocol and the admin API of docs/auth.md, with `requests` only.

- `challenge`, `parse_challenge`: what a 401 from /v2/ asks for.
- `token_response`, `fetch_token`, `oauth_token`: the realm (`/auth/token`), GET and POST forms.
- `decode_jwt`, `granted`: a token's header, claims and granted actions (no verification).
- `Client`: a requests.Session bound to the registry URL, with a fixed Bearer token, Basic
  credentials or nothing; `AutoClient` answers Bearer challenges the way docker does.
- `Admin`: users, projects, members and robots through /api/v1.
- `random_image`, `push_image`, `pull_image`: a tiny OCI image (config + one layer) pushed and
  pulled back with its digests checked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin

import requests

TIMEOUT = 60
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"

_CHALLENGE_PARAM = re.compile(r'([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


def new_secret() -> str:
    """A random password (URL-safe, 32 characters)."""
    return secrets.token_urlsafe(24)


def unique(prefix: str) -> str:
    """`prefix-<8 hex>`: a user, robot or repository name no other test uses."""
    return f"{prefix}-{secrets.token_hex(4)}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- challenges and tokens -------------------------------------------------------------------


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="x",service="y",scope="a b"` -> ("bearer", {"realm": "x", ...})."""
    header = (header or "").strip()
    if not header:
        return "", {}
    scheme, _, rest = header.partition(" ")
    params = {}
    for m in _CHALLENGE_PARAM.finditer(rest):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = value.replace('\\"', '"')
    return scheme.lower(), params


def challenge(base_url: str) -> dict[str, str]:
    """The parameters of the Bearer challenge an anonymous `GET /v2/` answers (asserts 401)."""
    r = requests.get(base_url.rstrip("/") + "/v2/", timeout=TIMEOUT)
    assert r.status_code == 401, f"anonymous GET /v2/ -> {r.status_code}, expected 401"
    scheme, params = parse_challenge(r.headers.get("WWW-Authenticate", ""))
    assert scheme == "bearer", f"WWW-Authenticate: {r.headers.get('WWW-Authenticate')!r}"
    return params


def realm_and_service(base_url: str) -> tuple[str, str]:
    params = challenge(base_url)
    return params["realm"], params.get("service", "")


def token_response(
    base_url: str,
    creds: tuple[str, str] | None = None,
    scopes: list[str] | tuple[str, ...] = (),
    service: str | None = None,
) -> requests.Response:
    """`GET <realm>?service=…&scope=…&scope=…` with optional Basic credentials (the raw answer).
    The realm and, unless given, the service come from the registry's challenge."""
    realm, announced = realm_and_service(base_url)
    query = [("service", announced if service is None else service)]
    query += [("scope", s) for s in scopes]
    return requests.get(realm, params=query, auth=creds, timeout=TIMEOUT)


def fetch_token(
    base_url: str, creds: tuple[str, str] | None = None, scopes: list[str] | tuple[str, ...] = ()
) -> str:
    """A token for `scopes` (asserts 200)."""
    r = token_response(base_url, creds, scopes)
    assert r.status_code == 200, f"token request as {creds[0] if creds else 'anonymous'} for {list(scopes)}: " \
                                 f"{r.status_code} {r.text[:300]}"
    body = r.json()
    token = body.get("token") or body.get("access_token")
    assert token, f"token answer without a token: {body}"
    return token


def oauth_token(base_url: str, form: dict) -> requests.Response:
    """`POST <realm>` with an OAuth2 form (grant_type=password|refresh_token, …); `service` is
    added from the challenge unless the form has one."""
    realm, service = realm_and_service(base_url)
    data = {"service": service, "client_id": "berth-e2e", **form}
    return requests.post(realm, data=data, timeout=TIMEOUT)


def scope(repo: str, *actions: str) -> str:
    """`repository:<repo>:<actions>`."""
    return f"repository:{repo}:{','.join(actions)}"


CATALOG_SCOPE = "registry:catalog:*"


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode_jwt(token: str) -> tuple[dict, dict]:
    """(header, claims) of a JWT, without verifying its signature."""
    parts = token.split(".")
    assert len(parts) == 3, f"not a JWS compact token: {token[:40]}…"
    return json.loads(_b64url_decode(parts[0])), json.loads(_b64url_decode(parts[1]))


def granted(token_or_claims: str | dict) -> dict[tuple[str, str], set[str]]:
    """{(type, name): actions} of a token's `access` claim (scopes granted nothing are absent or
    empty; look them up with `.get(key, set())`)."""
    claims = decode_jwt(token_or_claims)[1] if isinstance(token_or_claims, str) else token_or_claims
    out: dict[tuple[str, str], set[str]] = {}
    for entry in claims.get("access") or []:
        out.setdefault((entry["type"], entry["name"]), set()).update(entry.get("actions") or [])
    return out


def repo_actions(token: str, repo: str) -> set[str]:
    return granted(token).get(("repository", repo), set())


# --- HTTP clients ----------------------------------------------------------------------------


class Client(requests.Session):
    """A Session bound to the registry URL: paths starting with "/" are resolved against it, every
    request has a timeout, and a fixed Bearer `token` or Basic `basic` credentials (or nothing)
    are sent with each request."""

    def __init__(self, base_url: str, token: str | None = None, basic: tuple[str, str] | None = None):
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.token = token
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if basic:
            self.auth = basic

    def resolve(self, url: str) -> str:
        if url.startswith(("http://", "https://")):
            return url
        return urljoin(self.base_url + "/", url)

    def request(self, method, url, *args, **kwargs):  # noqa: D401 - requests API
        kwargs.setdefault("timeout", TIMEOUT)
        return super().request(method, self.resolve(url), *args, **kwargs)


class AutoClient(Client):
    """A Client that answers a Bearer challenge like docker: fetch a token for the challenge's
    scope from its realm (with `creds`, or anonymously) and retry once."""

    def __init__(self, base_url: str, creds: tuple[str, str] | None = None):
        super().__init__(base_url)
        self.creds = creds

    def request(self, method, url, *args, **kwargs):
        r = super().request(method, url, *args, **kwargs)
        if r.status_code != 401:
            return r
        scheme, params = parse_challenge(r.headers.get("WWW-Authenticate", ""))
        if scheme != "bearer" or "realm" not in params or params.get("error") == "insufficient_scope":
            return r
        query = [("service", params.get("service", ""))] + [("scope", s) for s in params.get("scope", "").split()]
        t = requests.get(params["realm"], params=query, auth=self.creds, timeout=TIMEOUT)
        if t.status_code != 200:
            return t
        body = t.json()
        headers = dict(kwargs.pop("headers", None) or {})
        headers["Authorization"] = f"Bearer {body.get('token') or body.get('access_token')}"
        return super().request(method, url, *args, headers=headers, **kwargs)


def login(base_url: str, creds: tuple[str, str] | None, scopes: list[str] | tuple[str, ...]) -> Client:
    """A Client carrying a token for `scopes` fetched with `creds` (None: anonymous)."""
    return Client(base_url, token=fetch_token(base_url, creds, scopes))


def catalog(client: requests.Session) -> list[str]:
    """Every repository `GET /v2/_catalog` lists to this client, following `Link` pages."""
    repos: list[str] = []
    url = "/v2/_catalog"
    for _ in range(1000):
        r = client.get(url)
        assert r.status_code == 200, f"GET {url}: {r.status_code} {r.text[:300]}"
        repos += r.json().get("repositories") or []
        link = r.headers.get("Link")
        if not link:
            return repos
        m = re.search(r"<([^>]+)>", link)
        assert m, f"unparsable Link header {link!r}"
        url = m.group(1)
    raise AssertionError("the catalog never ended")


# --- admin API -------------------------------------------------------------------------------


def _ok(r: requests.Response, what: str, codes=(200, 201, 204)) -> requests.Response:
    assert r.status_code in codes, f"{what}: {r.status_code} {r.text[:500]}"
    return r


class Admin:
    """The admin REST API (/api/v1) as a caller with Basic credentials (a registry admin, or a
    project admin for the project-level calls)."""

    def __init__(self, base_url: str, creds: tuple[str, str]):
        self.client = Client(base_url, basic=creds)

    def create_user(self, name: str, password: str, admin: bool = False) -> dict:
        r = self.client.post("/api/v1/users", json={"name": name, "password": password, "admin": admin})
        _ok(r, f"create user {name}", (200, 201))
        return r.json() if r.content else {}

    def update_user(self, name: str, **fields) -> None:
        _ok(self.client.patch(f"/api/v1/users/{name}", json=fields), f"PATCH user {name} {fields}")

    def create_project(self, name: str, public: bool = False) -> None:
        _ok(self.client.post("/api/v1/projects", json={"name": name, "public": public}), f"create project {name}",
            (201,))

    def set_member(self, project: str, name: str, role: str, kind: str = "user") -> None:
        r = self.client.put(f"/api/v1/projects/{project}/members", json={"kind": kind, "name": name, "role": role})
        _ok(r, f"set {kind} {name} as {role} of {project}")

    def create_robot(self, name: str, permissions: list[dict], **extra) -> dict:
        """201 {name: "robot$<name>", secret, expires_at, permissions}."""
        r = self.client.post("/api/v1/robots", json={"name": name, "permissions": permissions, **extra})
        _ok(r, f"create robot {name}", (201,))
        return r.json()

    def delete_robot(self, name: str) -> None:
        _ok(self.client.delete(f"/api/v1/robots/{name}"), f"delete robot {name}", (204,))

    def audit(self, **params) -> list[dict]:
        r = self.client.get("/api/v1/audit", params=params)
        _ok(r, f"GET /api/v1/audit {params}", (200,))
        return r.json()["events"]

    def wait_audit(self, match, timeout: float = 3.0, **params) -> dict:
        """The first event of `GET /api/v1/audit?<params>` for which `match(event)` holds, polled
        for up to `timeout` seconds (events are written in batches, about once a second)."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.audit(**params)
            for e in events:
                if match(e):
                    return e
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching audit event for {params} within {timeout}s; got {events[:20]}")
            time.sleep(0.2)


# --- images ----------------------------------------------------------------------------------


@dataclass
class Image:
    config: bytes
    layer: bytes
    manifest: bytes = field(init=False)

    def __post_init__(self):
        self.manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(self.config), "size": len(self.config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": sha256(self.layer), "size": len(self.layer)}],
        }).encode()

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def blobs(self) -> dict[str, bytes]:
        return {sha256(self.config): self.config, sha256(self.layer): self.layer}

    @property
    def layer_digest(self) -> str:
        return sha256(self.layer)


def random_image() -> Image:
    """An image no other test pushes: a random config and a random 1 KiB layer."""
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"e2e": secrets.token_hex(8)}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }).encode()
    return Image(config=config, layer=os.urandom(1024))


def push_blob(client: requests.Session, repo: str, data: bytes) -> requests.Response:
    """POST an upload session and PUT the blob into it; the PUT's answer (or the POST's, when it
    is not 202)."""
    r = client.post(f"/v2/{repo}/blobs/uploads/")
    if r.status_code != 202:
        return r
    location = urljoin(client.base_url + "/", r.headers["Location"])
    sep = "&" if "?" in location else "?"
    return client.put(f"{location}{sep}digest={sha256(data)}", data=data,
                      headers={"Content-Type": "application/octet-stream"})


def push_image(client: requests.Session, repo: str, tag: str, image: Image | None = None) -> Image:
    """Pushes `image` (default: a new random one) as `repo:tag`; asserts every step succeeds."""
    image = image or random_image()
    for digest, data in image.blobs.items():
        r = push_blob(client, repo, data)
        assert r.status_code == 201, f"push blob {digest} to {repo}: {r.status_code} {r.text[:300]}"
    r = client.put(f"/v2/{repo}/manifests/{tag}", data=image.manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, f"push manifest {repo}:{tag}: {r.status_code} {r.text[:300]}"
    return image


def pull_image(client: requests.Session, repo: str, reference: str, image: Image) -> None:
    """Pulls `repo:reference` (manifest, then every blob) and checks it is `image`."""
    r = client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200, f"pull manifest {repo}:{reference}: {r.status_code} {r.text[:300]}"
    assert sha256(r.content) == image.digest, f"{repo}:{reference} has digest {sha256(r.content)}, not {image.digest}"
    for digest in image.blobs:
        r = client.get(f"/v2/{repo}/blobs/{digest}")
        assert r.status_code == 200, f"pull blob {digest} of {repo}: {r.status_code} {r.text[:300]}"
        assert sha256(r.content) == digest, f"blob {digest} of {repo} came back as {sha256(r.content)}"
