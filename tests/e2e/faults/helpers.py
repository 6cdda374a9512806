"""Pushes and pulls with plain HTTP for the fault-injection suite, and checks of the errors Berth
answers while a fault is on.

The image, blob-push and pull helpers are tests/e2e/auth/helpers.py's (`Image`, `push_blob`,
`pull_image`); what this module adds is a push that does not assert but reports the first step
that failed (`push`, `put_manifest`), a chunked variant of the blob upload (POST, PATCH, PUT), a
GET that survives a cut connection (`fetch`), and `unavailable_problem`, which tells what is
wrong with an error answer.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from urllib.parse import urljoin

import requests

from auth.helpers import OCI_MANIFEST, Client, Image, pull_image, push_blob, random_image, sha256

MiB = 1 << 20
# (connect, read) seconds for every request of this suite: no fault may make Berth take longer
# than this to answer, so a hang is a failure here, not a stuck test run.
TIMEOUT = (5, 20)

__all__ = [
    "MiB", "OCI_MANIFEST", "TIMEOUT", "Failure", "FaultClient", "Fetched", "error_of", "fetch", "image", "pull_image",
    "push", "put_manifest", "sha256", "unavailable_problem",
]


class FaultClient(Client):
    """tests/e2e/auth/helpers.py's Client (a Session bound to the registry URL, with Basic
    credentials or none) with this suite's shorter timeout."""

    def __init__(self, base_url: str, basic: tuple[str, str] | None = None, timeout=TIMEOUT):
        super().__init__(base_url, basic=basic)
        self.timeout = timeout

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)


def image(layer_size: int = 64 * 1024) -> Image:
    """A new image (random config) whose one layer is `layer_size` random bytes."""
    return Image(config=random_image().config, layer=os.urandom(layer_size))


@dataclass
class Failure:
    """The first request of a push that did not get the answer a push needs."""

    step: str
    response: requests.Response | None = None
    error: Exception | None = None  # no answer at all (connection cut, timeout)
    seconds: float = 0.0

    def __str__(self) -> str:
        if self.error is not None:
            return f"{self.step}: no answer after {self.seconds:.1f}s: {self.error!r}"
        r = self.response
        return f"{self.step}: {r.status_code} after {self.seconds:.1f}s {r.text[:400]!r}"


def _location(client: Client, r: requests.Response) -> str:
    return urljoin(client.base_url + "/", r.headers["Location"])


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


def _chunked_blob(client: Client, repo: str, data: bytes) -> tuple[str, requests.Response]:
    """POST a session, PATCH the bytes, PUT ?digest= (no body): (step, answer) of the first
    request that did not succeed, or of the final PUT."""
    r = client.post(f"/v2/{repo}/blobs/uploads/")
    if r.status_code != 202:
        return "POST upload", r
    r = client.patch(_location(client, r), data=data, headers={
        "Content-Type": "application/octet-stream", "Content-Range": f"0-{len(data) - 1}",
    })
    if r.status_code != 202:
        return "PATCH upload", r
    return "PUT upload", client.put(_with_digest(_location(client, r), sha256(data)))


def push(client: Client, repo: str, tag: str, img: Image, chunked: bool = False) -> Failure | None:
    """Pushes `img` as repo:tag (every blob, then the manifest): None when every request
    succeeded (the manifest PUT answered 201: the image is acknowledged), else the first
    failure. Blobs go up monolithically (POST, PUT with the bytes: auth/helpers.push_blob) or,
    with `chunked`, as POST, PATCH, PUT."""
    start = time.monotonic()
    step = "start"
    try:
        for digest, data in img.blobs.items():
            if chunked:
                step, r = _chunked_blob(client, repo, data)
                step = f"blob {digest[:19]} ({len(data)} bytes) {step}"
            else:
                step = f"blob {digest[:19]} ({len(data)} bytes) POST+PUT upload"
                r = push_blob(client, repo, data)
            if r.status_code != 201:
                return Failure(step, response=r, seconds=time.monotonic() - start)
        step = f"PUT manifest {repo}:{tag}"
        start = time.monotonic()
        r = client.put(f"/v2/{repo}/manifests/{tag}", data=img.manifest, headers={"Content-Type": OCI_MANIFEST})
        if r.status_code != 201:
            return Failure(step, response=r, seconds=time.monotonic() - start)
        return None
    except requests.RequestException as e:
        return Failure(step, error=e, seconds=time.monotonic() - start)


def put_manifest(client: Client, repo: str, tag: str, img: Image) -> Failure | None:
    start = time.monotonic()
    step = f"PUT manifest {repo}:{tag}"
    try:
        r = client.put(f"/v2/{repo}/manifests/{tag}", data=img.manifest, headers={"Content-Type": OCI_MANIFEST})
    except requests.RequestException as e:
        return Failure(step, error=e, seconds=time.monotonic() - start)
    return None if r.status_code == 201 else Failure(step, response=r, seconds=time.monotonic() - start)


@dataclass
class Fetched:
    """What a GET delivered: the answer's status and headers (None if none came), the body
    bytes that arrived, and the error that cut it short, if any."""

    status: int | None
    response: requests.Response | None
    body: bytes
    error: Exception | None


def fetch(client: Client, path: str, **kwargs) -> Fetched:
    """GET `path`, streaming the body, without raising when the connection breaks."""
    body = bytearray()
    r = None
    try:
        with client.get(path, stream=True, **kwargs) as r:
            for chunk in r.iter_content(64 * 1024):
                body += chunk
    except requests.RequestException as e:
        return Fetched(r.status_code if r is not None else None, r, bytes(body), e)
    return Fetched(r.status_code, r, bytes(body), None)


def error_of(body: bytes) -> tuple[str | None, str]:
    """(code, message) of the first entry of an OCI error body; (None, why) if it is none."""
    try:
        first = json.loads(body)["errors"][0]
        return first.get("code"), first.get("message") or ""
    except (ValueError, KeyError, IndexError, TypeError) as e:
        return None, f"not an OCI error body ({e!r}): {body[:300]!r}"


def unavailable_problem(
    what: Failure | Fetched | requests.Response,
    status: int,
    message: str | None = None,
    retry_after: bool = False,
) -> str | None:
    """None when `what` is the answer Berth owes a client while a backend is failing: HTTP
    `status` with the OCI error body `{"errors":[{"code":"UNAVAILABLE","message":...}]}`, the
    message matching the regular expression `message` (case-insensitive) if given, and a
    `Retry-After` header (delay-seconds) if `retry_after`; otherwise what is wrong, for a
    failure message."""
    expected = f"expected {status} UNAVAILABLE"
    if isinstance(what, Failure):
        if what.error is not None:
            return f"{what}: {expected}"
        label, r, body = f"{what.step} ({what.seconds:.1f}s)", what.response, what.response.content
    elif isinstance(what, Fetched):
        r, body = what.response, what.body
        if r is None:
            return f"GET: no answer ({what.error!r}): {expected}"
        label = f"{r.request.method} {r.request.path_url}"
        if what.error is not None:
            return (f"{label}: {r.status_code}, then the connection broke after {len(body)} bytes "
                    f"({what.error!r}): {expected}")
    else:
        label, r, body = f"{what.request.method} {what.request.path_url}", what, what.content
    code, text = error_of(body)
    problems = []
    if r.status_code != status:
        problems.append(f"status {r.status_code}, expected {status}")
    if code != "UNAVAILABLE":
        problems.append(f"code {code!r}, expected 'UNAVAILABLE'")
    if message is not None and (code is None or not re.search(message, text, re.IGNORECASE)):
        problems.append(f"message {text!r} does not match /{message}/i")
    if retry_after:
        value = r.headers.get("Retry-After")
        if value is None or not value.strip().isdigit() or int(value) < 1:
            problems.append(f"Retry-After {value!r}, expected a number of seconds")
    if not problems:
        return None
    return f"{label}: " + "; ".join(problems) + f" (body {body[:300]!r})"
