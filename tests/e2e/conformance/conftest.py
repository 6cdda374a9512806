"""Fixtures for the OCI Distribution Spec v1.1 conformance port (tests/e2e/conformance).

Ports the client side of conformance/setup.go (reggie client with username/password) and the
suite wiring of conformance/00_conformance_suite_test.go of opencontainers/distribution-spec
(setup.go at commit b5f09ebe541c65857e8721d51a7a3d0e2f1d8749, 00_conformance_suite_test.go at
commit 81bb239e0c8eebab51ad43171bf99fc1a39fea6e).

Upstream runs the four workflows as ordered Ginkgo specs that share state through package
variables. Here each workflow is one module; its tests run in file order and share state through
the module-scoped `state` and `data` fixtures, and each module pushes into its own fresh
repository (`repo`), so runs and modules are independent of each other.

`client` talks to the shared `registry` fixture (tests/e2e/conftest.py). When the registry has
credentials (`registry.creds`), a 401 is answered the way Docker clients do: a Bearer challenge
(`WWW-Authenticate: Bearer realm=...,service=...,scope=...`) gets a token from the realm with
basic auth and the request is retried with `Authorization: Bearer <token>`; a Basic challenge
is retried with basic auth.

`sparse_registry` is a registry that accepts sparse manifests (manifests that list blobs or
manifests it does not hold), for the sparse data set of the spec-main runner
(test_spec_main_sparse.py). Berth refuses them unless `registry.sparse_manifests` is on, so the
fixture starts a berth of its own, set up as the session's `registry` (admin password, projects
created on first push, the same blob and metadata stores, the same ordinary user, or
`--no-auth` with BERTH_E2E_AUTH=off) plus BERTH_REGISTRY__SPARSE_MANIFESTS=true. With
REGISTRY_URL set it is that registry, as it is.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import types
from pathlib import Path

import pytest
import requests

from conftest import (  # tests/e2e/conftest.py, as pytest loaded it
    ADMIN_USER,
    AUTH,
    database_env,
    start_berth,
    stop_berth,
    storage_env,
)

from .conformance_support import TestData, new_namespace

_CHALLENGE_PARAM = re.compile(r'([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="x",service="y",scope="a b"` -> ("bearer", {...})."""
    header = header.strip()
    if not header:
        return "", {}
    scheme, _, rest = header.partition(" ")
    params = {}
    for m in _CHALLENGE_PARAM.finditer(rest):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = value.replace('\\"', '"')
    return scheme.lower(), params


class RegistryClient(requests.Session):
    """requests.Session bound to a registry base URL, with the Docker auth flow.

    Paths starting with "/" are resolved against the registry URL (like reggie's NewRequest with
    a relative location). Redirects are followed for every method, HEAD included, as Go's client
    does.
    """

    def __init__(self, base_url: str, creds: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.creds = creds
        self.headers["User-Agent"] = "distribution-spec-conformance-tests (berth python port)"
        self._use_basic = False
        self._tokens: dict[str, str] = {}  # "service|scope" -> token

    def resolve(self, url: str) -> str:
        if url.startswith("http://") or url.startswith("https://"):
            return url
        if not url.startswith("/"):
            url = "/" + url
        return self.base_url + url

    def request(self, method, url, *args, **kwargs):  # noqa: D401 - requests API
        url = self.resolve(url)
        kwargs.setdefault("allow_redirects", True)
        kwargs.setdefault("timeout", 120)
        headers = dict(kwargs.pop("headers", None) or {})
        if self.creds and self._use_basic and "Authorization" not in headers:
            kwargs.setdefault("auth", self.creds)
        resp = super().request(method, url, *args, headers=headers, **kwargs)
        if resp.status_code != 401 or not self.creds:
            return resp
        scheme, params = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            self._use_basic = True
            kwargs["auth"] = self.creds
        elif scheme == "bearer":
            headers["Authorization"] = f"Bearer {self._token(params)}"
            kwargs.pop("auth", None)
        else:
            return resp
        return super().request(method, url, *args, headers=headers, **kwargs)

    def _token(self, params: dict[str, str]) -> str:
        realm = params.get("realm")
        assert realm, f"Bearer challenge without realm: {params}"
        service = params.get("service", "")
        scopes = params.get("scope", "").split()
        key = f"{service}|{' '.join(scopes)}"
        if key in self._tokens:
            # a cached token was just refused (expired or too narrow): fetch a new one
            del self._tokens[key]
        query = []
        if service:
            query.append(("service", service))
        query.extend(("scope", s) for s in scopes)
        resp = requests.get(realm, params=query, auth=self.creds, timeout=60)
        assert resp.status_code == 200, f"token request to {resp.url} -> {resp.status_code} {resp.text[:300]}"
        body = resp.json()
        token = body.get("token") or body.get("access_token")
        assert token, f"token response without token: {body}"
        self._tokens[key] = token
        return token


@pytest.fixture(scope="session")
def client(registry) -> RegistryClient:
    c = RegistryClient(registry.url, registry.creds)
    yield c
    c.close()


class Repo:
    """A repository on the registry; `path("blobs/uploads/")` -> `/v2/<name>/blobs/uploads/`."""

    def __init__(self, client: RegistryClient, name: str) -> None:
        self.client = client
        self.name = name

    def path(self, suffix: str) -> str:
        return f"/v2/{self.name}/{suffix.lstrip('/')}"

    def __call__(self, method: str, suffix: str, **kwargs) -> requests.Response:
        return self.client.request(method, self.path(suffix), **kwargs)


def _module_label(request) -> str:
    """test_content_discovery.py -> "content-discovery"."""
    return request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")


@pytest.fixture(scope="module")
def repo(client, request) -> Repo:
    """A fresh repository per test module (upstream: OCI_NAMESPACE)."""
    return Repo(client, new_namespace(_module_label(request)))


@pytest.fixture(scope="module")
def data() -> TestData:
    """The module's test content (upstream: the package variables set by setup.go init())."""
    return TestData()


@pytest.fixture(scope="module")
def state() -> types.SimpleNamespace:
    """Values one spec hands to the next (upstream: closure variables such as lastResponse)."""
    return types.SimpleNamespace()


SPARSE_ENV = {"BERTH_REGISTRY__SPARSE_MANIFESTS": "true"}


def _start_sparse_berth(tmp: Path):
    """berth with sparse manifests on, authenticated the way the session's `registry` is."""
    if not AUTH:
        return start_berth(tmp, ["--no-auth"], env={**storage_env(), **database_env(), **SPARSE_ENV})
    admin_password = secrets.token_urlsafe(24)
    reg = start_berth(tmp, env={
        "BERTH_ADMIN_PASSWORD": admin_password,
        "BERTH_AUTH__AUTO_CREATE_PROJECTS": "true",
        **storage_env(),
        **database_env(),
        **SPARSE_ENV,
    })
    user, password = "e2e-user", secrets.token_urlsafe(24)
    r = requests.post(reg.url + "/api/v1/users", json={"name": user, "password": password, "admin": False},
                      auth=(ADMIN_USER, admin_password), timeout=30)
    if r.status_code != 201:
        stop_berth(reg)
        raise RuntimeError(f"creating the e2e user failed: {r.status_code} {r.text}")
    reg.user, reg.password = user, password
    return reg


@pytest.fixture(scope="module")
def sparse_registry(registry):
    """A registry that accepts sparse manifests (see the module docstring).

    It depends on the session's `registry` so that its PostgreSQL database (BERTH_E2E_DATABASE=
    postgres), created by database_env(), is dropped with the session's at the end of the run."""
    if os.environ.get("REGISTRY_URL"):
        yield registry
        return
    tmp = Path(tempfile.mkdtemp(prefix="berth-e2e-sparse-"))
    reg = _start_sparse_berth(tmp)
    yield reg
    stop_berth(reg)
    if reg.proc is not None and reg.proc.returncode not in (0, None):
        print(f"berth (sparse manifests) exited with {reg.proc.returncode}; log kept at {reg.log_path}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def sparse_client(sparse_registry) -> RegistryClient:
    c = RegistryClient(sparse_registry.url, sparse_registry.creds)
    yield c
    c.close()


@pytest.fixture(scope="module")
def sparse_repo(sparse_client, request) -> Repo:
    """A fresh repository on `sparse_registry`, one per test module."""
    return Repo(sparse_client, new_namespace(_module_label(request)))
