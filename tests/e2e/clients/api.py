"""A small HTTP client for checking, through the registry API itself, what a real client did.

It answers a 401 the way clients do: HTTP Basic when the challenge is `Basic`, and for a `Bearer`
challenge it fetches a token from the challenge's realm (with Basic credentials when the registry
has some) and retries once, so the same checks work with authentication on or off.
"""

from __future__ import annotations

import hashlib
import json
import re

import requests

from .images import ACCEPT_ANY_MANIFEST, OCI_INDEX

TIMEOUT = 30


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class RegistryAPI:
    def __init__(self, url: str, creds: tuple[str, str] | None):
        self.url = url.rstrip("/")
        self.creds = creds
        self.session = requests.Session()

    def request(self, method: str, path: str, headers: dict | None = None, **kwargs) -> requests.Response:
        headers = dict(headers or {})
        url = path if path.startswith("http") else self.url + path
        response = self.session.request(method, url, headers=headers, timeout=TIMEOUT, allow_redirects=True, **kwargs)
        if response.status_code != 401:
            return response
        scheme, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic" and self.creds:
            return self.session.request(
                method, url, headers=headers, auth=self.creds, timeout=TIMEOUT, allow_redirects=True, **kwargs
            )
        if scheme == "bearer" and "realm" in params:
            query = {k: v for k, v in params.items() if k in ("service", "scope")}
            token_response = self.session.get(params["realm"], params=query, auth=self.creds, timeout=TIMEOUT)
            token_response.raise_for_status()
            body = token_response.json()
            token = body.get("token") or body.get("access_token")
            headers["Authorization"] = f"Bearer {token}"
            return self.session.request(method, url, headers=headers, timeout=TIMEOUT, allow_redirects=True, **kwargs)
        return response

    # --- manifests ---------------------------------------------------------------------------

    def manifest(self, repo: str, reference: str, accept: str = ACCEPT_ANY_MANIFEST) -> requests.Response:
        return self.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": accept})

    def manifest_ok(self, repo: str, reference: str, accept: str = ACCEPT_ANY_MANIFEST) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest that must exist; checks the digest header."""
        r = self.manifest(repo, reference, accept)
        assert r.status_code == 200, f"GET /v2/{repo}/manifests/{reference}: {r.status_code} {r.text[:500]}"
        digest = "sha256:" + hashlib.sha256(r.content).hexdigest()
        header = r.headers.get("Docker-Content-Digest")
        assert header in (None, digest), f"Docker-Content-Digest {header} is not the digest of the body {digest}"
        if reference.startswith("sha256:"):
            assert digest == reference, f"GET by digest {reference} returned a body with digest {digest}"
        media_type = r.headers.get("Content-Type", "").split(";")[0].strip()
        return r.content, media_type, digest

    def manifest_digest(self, repo: str, reference: str, accept: str = ACCEPT_ANY_MANIFEST) -> str | None:
        """The digest a HEAD of the manifest reports, or None when it does not exist."""
        r = self.request("HEAD", f"/v2/{repo}/manifests/{reference}", headers={"Accept": accept})
        if r.status_code == 404:
            return None
        assert r.status_code == 200, f"HEAD /v2/{repo}/manifests/{reference}: {r.status_code}"
        return r.headers["Docker-Content-Digest"]

    def index(self, repo: str, reference: str) -> tuple[dict, str]:
        body, media_type, digest = self.manifest_ok(repo, reference, accept=ACCEPT_ANY_MANIFEST)
        return json.loads(body), digest

    # --- blobs -------------------------------------------------------------------------------

    def blob(self, repo: str, digest: str) -> bytes:
        r = self.request("GET", f"/v2/{repo}/blobs/{digest}")
        assert r.status_code == 200, f"GET /v2/{repo}/blobs/{digest}: {r.status_code} {r.text[:300]}"
        got = "sha256:" + hashlib.sha256(r.content).hexdigest()
        assert got == digest, f"blob {digest} of {repo} came back with digest {got}"
        return r.content

    def blob_exists(self, repo: str, digest: str) -> bool:
        r = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        assert r.status_code in (200, 404), f"HEAD /v2/{repo}/blobs/{digest}: {r.status_code}"
        return r.status_code == 200

    # --- tags and referrers ------------------------------------------------------------------

    def tags(self, repo: str) -> list[str] | None:
        r = self.request("GET", f"/v2/{repo}/tags/list")
        if r.status_code == 404:
            return None
        assert r.status_code == 200, f"GET /v2/{repo}/tags/list: {r.status_code} {r.text[:300]}"
        return r.json().get("tags") or []

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> requests.Response:
        params = {"artifactType": artifact_type} if artifact_type else None
        return self.request("GET", f"/v2/{repo}/referrers/{digest}", headers={"Accept": OCI_INDEX}, params=params)
