"""The state the schemathesis runs of test_schemathesis.py start from, and its repair.

Imported by the test (under pytest, in .venv) and by schemathesis_hooks.py (in the `st`
process, in .venv-schemathesis): it needs nothing but `requests` and tests/e2e/auth/helpers.py.

- project `team`, private;
- repository `team/app/api` (the example the document gives for `{repository}`) with one image
  tagged `v1`;
- user `fuzz-guest`, a *guest* member of `team`;
- robot `robot$fuzz-ci`, pull on `team`.
"""

from __future__ import annotations

import json

import requests

from auth.helpers import Client, Image, push_image

PROJECT = "team"
REPOSITORY = "team/app/api"
TAG = "v1"
GUEST = "fuzz-guest"
ROBOT = "robot$fuzz-ci"
# A fixed image (not random_image()): its digest is handed to the fuzzer, so the generated cases
# are the same in every run.
IMAGE = Image(
    config=json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"purpose": "schemathesis"}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }).encode(),
    layer=b"berth schemathesis layer\n" * 40,
)


def _expect(r: requests.Response, what: str, codes: tuple[int, ...]) -> requests.Response:
    assert r.status_code in codes, f"{what}: {r.status_code} {r.text[:500]}"
    return r


def push(url: str, admin: tuple[str, str]) -> None:
    """`team/app/api:v1` is IMAGE again (Basic credentials straight on /v2/; pushing the same
    bytes again changes nothing)."""
    push_image(Client(url, basic=admin), REPOSITORY, TAG, IMAGE)


def ensure_robot(url: str, admin: tuple[str, str]) -> None:
    r = Client(url, basic=admin).post(
        "/api/v1/robots", json={"name": ROBOT, "permissions": [{"project": PROJECT, "actions": ["pull"]}]}
    )
    _expect(r, "create the robot", (201, 409))


def ensure_member(url: str, admin: tuple[str, str]) -> None:
    r = Client(url, basic=admin).put(
        f"/api/v1/projects/{PROJECT}/members", json={"kind": "user", "name": GUEST, "role": "guest"}
    )
    _expect(r, "make the user a guest of the project", (200, 201))


def prepare(url: str, admin: tuple[str, str], guest: tuple[str, str]) -> None:
    """Puts the whole state in place; idempotent (what exists is reset, not created twice)."""
    c = Client(url, basic=admin)
    _expect(c.post("/api/v1/projects", json={"name": PROJECT, "public": False}), "create the project", (201, 409))
    _expect(c.patch(f"/api/v1/projects/{PROJECT}", json={"public": False}), "make the project private", (200,))
    push(url, admin)
    name, password = guest
    _expect(c.post("/api/v1/users", json={"name": name, "password": password, "admin": False}),
            "create the guest user", (201, 409))
    _expect(c.patch(f"/api/v1/users/{name}", json={"admin": False, "disabled": False}), "reset the guest", (200,))
    _expect(c.put(f"/api/v1/users/{name}/password", json={"password": password}), "reset the guest's password",
            (204,))
    ensure_member(url, admin)
    ensure_robot(url, admin)
