"""Schemathesis hooks for test_schemathesis.py.

The `st` CLI in .venv-schemathesis loads this file (the `hooks` key of the schemathesis.toml
the test writes); pytest never imports it. The test passes, in ST_BERTH_RUN (JSON): the berth
URL, the admin's and the guest's credentials, and `caller`, the name the run signs in with.
"""

import json
import os
import sys
from pathlib import Path

import schemathesis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/e2e, for api.state and auth.helpers

from api import state  # noqa: E402

RUN = json.loads(os.environ["ST_BERTH_RUN"])
URL = RUN["url"]
ADMIN = tuple(RUN["admin"])
GUEST = tuple(RUN["guest"])
CALLER = RUN["caller"]


@schemathesis.hook
def filter_case(ctx, case):
    # `PUT /api/v1/users/{user}/password` on the admin's own account, in the admin run: a
    # registry admin needs no `old_password`, so any generated body with a valid password would
    # change the credentials every later request of the run signs in with, and the rest of the run
    # would see only 401s. The operation is still fuzzed for every other user name. (The guest run
    # keeps its own password changes: they need the right `old_password`, which the fuzzer cannot
    # know.)
    if (
        CALLER == ADMIN[0]
        and case.operation.method.upper() == "PUT"
        and case.operation.path == "/api/v1/users/{user}/password"
    ):
        return case.path_parameters.get("user") != CALLER
    return True


# After a successful DELETE, what puts the state back (through the admin, outside the fuzzed
# requests), so that the rest of the run still finds it: otherwise the first deleted artifact,
# tag, robot or membership would leave every later case of its operations (and of the GETs that
# read them) a 404.
REPAIR = {
    "/api/v1/repositories/{repository}/tags/{tag}": lambda: state.push(URL, ADMIN),
    "/api/v1/repositories/{repository}/artifacts/{digest}": lambda: state.push(URL, ADMIN),
    "/api/v1/robots/{robot}": lambda: state.ensure_robot(URL, ADMIN),
    "/api/v1/projects/{project}/members": lambda: state.ensure_member(URL, ADMIN),
    "/api/v1/users/{user}": lambda: state.prepare(URL, ADMIN, GUEST),
    "/api/v1/projects/{project}": lambda: state.prepare(URL, ADMIN, GUEST),
}


@schemathesis.hook
def after_call(ctx, case, response):
    if case.operation.method.upper() == "DELETE" and 200 <= response.status_code < 300:
        repair = REPAIR.get(case.operation.path)
        if repair is not None:
            repair()
