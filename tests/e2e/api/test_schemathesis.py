"""The admin API (`/api/v1`, `/auth/token`) against its own OpenAPI document, black-box.

Schemathesis (PyPI; pinned in tests/e2e/api/requirements.txt, installed in .venv-schemathesis
by scripts/install-test-deps.sh) fuzzes every documented operation of a real `berth serve`,
once signed in as the registry admin and once as a user who is only a *guest* of the one
project (an anonymous run would only reach 401s), and checks that no answer is a 5xx, that every
status code is one the document lists for the operation, and that every body matches the
documented schema. Berth's log must show no 5xx, panic or error either. Two cheap probes first
check the served document itself: it is the committed crates/berth-server/src/openapi.json,
every operation it documents reaches a handler, and the methods it does not document are not
routed. (crates/berth-server/tests/openapi.rs checks, from the router's source, that every route
is documented.)

The module starts one authenticated berth and gives it a little state through the admin API
(state.py), so that fuzzed requests reach real code and not only 404s: project `team`
(private), repository `team/app/api` (the document's example for `{repository}`) with one image
tagged `v1`, user `fuzz-guest` as a guest member of `team`, and robot `robot$fuzz-ci`. In about
half of its generated cases schemathesis puts these names into the path parameters and a few
query parameters (its "dictionaries"); the other half are its own values. Its hooks
(schemathesis_hooks.py) keep one operation from breaking the rest of the run (the admin setting
its own password) and put the state back after each successful DELETE.

Each run starts by putting the state back too, so either may run alone (`-k admin`); in the
module the guest's run goes first.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from auth.helpers import Client, new_secret
from conftest import ADMIN_USER, ROOT, require_tool, start_berth, stop_berth

from .state import GUEST, IMAGE, PROJECT, REPOSITORY, ROBOT, TAG, prepare

DOCUMENT = ROOT / "crates" / "berth-server" / "src" / "openapi.json"
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
# Installed by scripts/install-test-deps.sh (pinned in requirements.txt here); SCHEMATHESIS_BIN
# picks another `st`.
SCHEMATHESIS = os.environ.get("SCHEMATHESIS_BIN", str(ROOT / ".venv-schemathesis" / "bin" / "st"))

# The checks: no 5xx, documented status codes, documented response bodies.
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
# Test cases per operation in the fuzzing phase (and the bound of the stateful phase). The
# examples phase and the coverage phase (boundary and invalid values of every parameter) do not
# depend on it. The budget is 3 minutes for both runs on a 2-core machine with a debug build of
# berth, where every password check or hash (a created user, a set password, a fuzzed login)
# costs argon2's time, and every POST /api/v1/gc or /scrub queues a job that berth runs beside
# the fuzzing. With 25, the guest run took 17 s and the admin run 44 s here (it changes more,
# and the hooks repair it), 61 s in all; 75-105 s in all while other builds shared the two
# cores: room for a slower machine within RUN_BUDGET. That is about 1,750 cases per run over the
# 37 operations schemathesis tests (the 38 of the document but its own URL, which schemathesis
# leaves out and the probes above check). A deeper run, randomized, with 300 per operation
# (about 13,400 cases as admin and as many as guest), found nothing more.
MAX_EXAMPLES = 25
# Derandomized generation (`--generation-deterministic`, which also means no example database;
# schemathesis then uses no seed): CI runs send the same requests every time (but for the
# stateful phase; see write_config), so a failure reproduces, and a new one means a change in
# berth, in the document or in tests/e2e/api/requirements.txt, not luck.
DETERMINISTIC = "--generation-deterministic"
# One worker: operations run in one order every time (the admin run changes state that later
# operations see), and the second core stays with berth.
WORKERS = 1
# Both runs of the module together stop after this many seconds (a run that is still going then
# fails the test): a hang or a berth that became very slow shows up as a failure, not as a CI
# job that runs for ever.
RUN_BUDGET = 180.0
_spent = 0.0


@dataclass
class World:
    url: str
    admin: tuple[str, str]
    guest: tuple[str, str]
    log_path: Path
    proc: subprocess.Popen


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    password = new_secret()
    reg = start_berth(
        tmp_path_factory.mktemp("schemathesis-berth"),
        env={
            "BERTH_ADMIN_PASSWORD": password,
            # The fuzzer sends many wrong passwords (POST /auth/token with generated ones, the
            # guest's password changes with a generated `old_password`), all from 127.0.0.1.
            # With the default 5 failures per (user, address) and 20 per address, the address
            # would be throttled (429) within seconds, and the rest of both runs would test
            # nothing but the throttle. The throttle has tests of its own in tests/e2e/auth.
            "BERTH_AUTH__MAX_FAILURES": "1000000",
        },
    )
    w = World(url=reg.url, admin=reg.creds, guest=(GUEST, new_secret()), log_path=reg.log_path, proc=reg.proc)
    try:
        prepare(w.url, w.admin, w.guest)
        guest = Client(w.url, basic=w.guest).get("/api/v1/me")
        assert guest.status_code == 200 and guest.json()["admin"] is False, f"the guest: {guest.status_code} {guest.text}"
        yield w
    finally:
        stop_berth(reg)
        print(f"berth log: {reg.log_path}")


# --- the served document ---------------------------------------------------------------------

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Harmless values for the documented path parameters (every probe is anonymous).
PROBE_VALUES = {
    "project": PROJECT, "user": GUEST, "robot": ROBOT, "repository": REPOSITORY, "tag": TAG,
    "digest": IMAGE.digest, "id": "1",
}


def _documented() -> dict:
    return json.loads(DOCUMENT.read_text())


def _probe_url(base: str, path: str) -> str:
    return base + re.sub(r"\{(\w+)\}", lambda m: PROBE_VALUES[m.group(1)], path)


def test_served_document_is_the_committed_one(world):
    r = requests.get(world.url + "/api/v1/openapi.json", timeout=30)
    assert r.status_code == 200, f"GET /api/v1/openapi.json as anonymous: {r.status_code}"
    assert r.headers.get("Content-Type", "").startswith("application/json")
    assert r.json() == _documented(), "the served document differs from crates/berth-server/src/openapi.json"


def test_documented_operations_are_routed_and_nothing_else(world):
    """Every documented (path, method) reaches a handler (whose answers all carry a body; the
    router's own 404 and 405 have none), and every other method on a documented path is the
    router's 405, except HEAD where GET is documented (axum answers HEAD with the GET handler)."""
    missing, extra = [], []
    for path, item in _documented()["paths"].items():
        url = _probe_url(world.url, path)
        documented = {m for m in item if m in METHODS}
        for method in METHODS:
            r = requests.request(method.upper(), url, timeout=30)
            routed = not (r.status_code in (404, 405) and not r.content)
            if method in documented and not routed:
                missing.append(f"{method.upper()} {path}: {r.status_code} without a body")
            elif method not in documented and routed and not (method == "head" and "get" in documented):
                extra.append(f"{method.upper()} {path}: {r.status_code} {r.text[:100]!r}")
    assert not missing, f"documented but not routed: {missing}"
    assert not extra, f"routed but not documented: {extra}"


# --- schemathesis ------------------------------------------------------------------------------


def _toml(value) -> str:
    """A TOML value for a string or a list of strings (a JSON string is a TOML basic string)."""
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def write_config(path: Path, creds: tuple[str, str]) -> None:
    """The schemathesis.toml of one run: the caller's Basic credentials, the hooks file, and the
    state's names bound to the parameters that name things."""
    # parameter -> values schemathesis puts there in about half of its generated cases
    bindings = {
        "path.project": [PROJECT],
        "path.repository": [REPOSITORY],
        "path.tag": [TAG],
        "path.digest": [IMAGE.digest],
        "path.user": [GUEST, ADMIN_USER],
        "path.robot": [ROBOT, ROBOT.removeprefix("robot$")],
        "query.name": [GUEST],  # DELETE .../members?kind=user&name=
        "query.q": [PROJECT, "app"],  # search
        "query.actor": [ADMIN_USER, GUEST],  # audit
        "query.resource": [PROJECT, REPOSITORY],  # audit
    }
    lines = [
        f"hooks = {_toml(str(HOOKS))}",
        "",
        "[auth.basic]",
        f"username = {_toml(creds[0])}",
        f"password = {_toml(creds[1])}",
        "",
    ]
    for i, (_, values) in enumerate(bindings.items()):
        lines += [f"[dictionaries.d{i}]", f"values = {_toml(values)}", ""]
    # No values taken from berth's answers into later cases (schemathesis' "extra data sources"
    # and "error feedback"): those answers hold job ids that depend on timing (POST /gc answers
    # the id of a GC job still queued, or a new one), and with them the generated cases differed
    # from run to run. Without them, every phase but the stateful one (which follows links with
    # such ids) sends the same requests in every run; the dictionaries give the names that matter.
    lines += [
        "[phases.examples.extra-data-sources]", "responses = false", "",
        "[phases.coverage.extra-data-sources]", "responses = false", "",
        "[phases.fuzzing.extra-data-sources]", "responses = false", "",
        "[phases.fuzzing.error-feedback]", "enabled = false", "",
    ]
    lines.append("[parameters]")
    for i, key in enumerate(bindings):
        lines.append(f'{_toml(key)} = {{ dictionary = "d{i}", probability = 0.5 }}')
    path.write_text("\n".join(lines) + "\n")


def run_schemathesis(world: World, tmp: Path, creds: tuple[str, str]) -> None:
    st = require_tool(SCHEMATHESIS)
    config = tmp / "schemathesis.toml"
    write_config(config, creds)
    report = tmp / "report.json"
    cmd = [
        st, "--config-file", str(config), "--no-color",
        "run", world.url + "/api/v1/openapi.json", "--url", world.url,
        "--checks", CHECKS,
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(MAX_EXAMPLES),
        DETERMINISTIC,
        "--workers", str(WORKERS),
        "--request-timeout", "30",
        "--continue-on-failure",
        "--report", "json", "--report-json-path", str(report),
        "--output-truncate", "false",
    ]
    run = {"url": world.url, "admin": world.admin, "guest": world.guest, "caller": creds[0]}
    env = {**os.environ, "ST_BERTH_RUN": json.dumps(run)}
    global _spent
    timeout = max(RUN_BUDGET - _spent, 1.0)
    log_start = len(world.log_path.read_bytes())
    started = time.monotonic()
    try:
        out = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        _spent = RUN_BUDGET
        partial = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"schemathesis as {creds[0]} did not finish within the {timeout:.0f} s left of the {RUN_BUDGET:.0f} s "
                    f"budget of both runs; its output so far:\n{partial[-20000:]}")
    elapsed = time.monotonic() - started
    _spent += elapsed
    print(f"schemathesis as {creds[0]}: {elapsed:.1f} s, exit status {out.returncode}")
    output = out.stdout + out.stderr
    (tmp / "schemathesis.out").write_text(output)
    summary = json.loads(report.read_text()) if report.exists() else {}
    alive = world.proc.poll() is None
    log_tail = world.log_path.read_bytes()[log_start:].decode(errors="replace")
    # 5xx answers (also to the hooks' repair requests, which schemathesis does not check),
    # panics, and whatever else berth logged as an error (a GC or scrub job the run queued, say).
    errors = [line for line in log_tail.splitlines() if re.search(r"\sERROR\s|panicked|status=5\d\d", line)]
    problems = []
    if not alive:
        problems.append(f"berth exited with status {world.proc.returncode} during the run")
    if out.returncode != 0:
        problems.append(f"schemathesis exited with status {out.returncode}")
    if errors:
        problems.append(f"berth logged {len(errors)} errors")
    if not summary:
        problems.append("schemathesis wrote no report")
    else:
        operations = summary.get("operations") or {}
        if not operations.get("selected") or operations.get("tested") != operations.get("selected"):
            problems.append(f"not every operation was tested: {operations}")
        problems += [f"{f['title']} ({f['count']}x): {', '.join(f['operations'])}" for f in summary.get("failures", [])]
        problems += [f"error: {e['title']} ({e['count']}x)" for e in summary.get("errors", [])]
        print(f"operations: {operations}, test cases: {summary.get('test_cases')}")
    assert not problems, (
        f"schemathesis as {creds[0]} ({elapsed:.0f} s): " + "; ".join(problems)
        + "\n\nberth's error log lines:\n" + "\n".join(errors[:50])
        + f"\n\nschemathesis output (also in {tmp / 'schemathesis.out'}):\n" + output[-20000:]
    )


def test_schemathesis_as_guest(world, tmp_path):
    prepare(world.url, world.admin, world.guest)
    run_schemathesis(world, tmp_path, world.guest)


def test_schemathesis_as_admin(world, tmp_path):
    prepare(world.url, world.admin, world.guest)
    run_schemathesis(world, tmp_path, world.admin)
