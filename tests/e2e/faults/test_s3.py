"""An S3 service that fails: Berth with `storage.backend = "s3"` pointed at s3proxy.py, a proxy
in front of moto that switches at run time between pass-through, 500, 503 with `Retry-After: 7`
and an S3 `SlowDown` body, and hanging (the request is read, never answered).

Berth runs with its S3 client's retries off and short timeouts (BERTH_STORAGE__S3__MAX_RETRIES=0,
RETRY_TIMEOUT=2s, READ_TIMEOUT=3s) so that nothing here waits on retries. It starts in
pass-through (it checks the bucket at start), pushes an image, then, with the fault on:

- a push and a pull of the image already pushed each get 503 `UNAVAILABLE` (never a 500); under
  the injected 503, Berth's answer carries a `Retry-After`; under the hang, the 503 comes within
  a few seconds of the read timeout;
- back in pass-through, the failed push succeeds and every acknowledged image pulls back intact,
  without restarting Berth.
"""

from __future__ import annotations

import os
import time
from unittest import mock

import pytest

import conftest as e2e  # tests/e2e/conftest.py: storage_env

from .helpers import FaultClient, image, pull_image, push, unavailable_problem

READ_TIMEOUT = 3.0  # BERTH_STORAGE__S3__READ_TIMEOUT
SLACK = 5.0  # seconds past the read timeout a hung S3 request may cost Berth before it answers


def s3_env(endpoint: str) -> dict:
    """tests/e2e/conftest.py's S3 configuration (bucket berth-test, a fresh key prefix) with the
    endpoint replaced by the proxy's, plus the retry and timeout settings of this suite."""
    with mock.patch.object(e2e, "STORAGE", "s3"), mock.patch.dict(os.environ, {"S3_TEST_ENDPOINT": endpoint}):
        env = e2e.storage_env()
    env.update({
        "BERTH_STORAGE__S3__MAX_RETRIES": "0",
        "BERTH_STORAGE__S3__RETRY_TIMEOUT": "2s",
        "BERTH_STORAGE__S3__READ_TIMEOUT": f"{READ_TIMEOUT:g}s",
        "BERTH_GC__SCHEDULE": "",
        "BERTH_SCRUB__SCHEDULE": "",
    })
    return env


@pytest.mark.parametrize("mode", ["500", "503", "hang"])
def test_s3_fault_answers_503_and_recovers_without_restart(mode, s3_proxy, berths, tmp_path):
    reg = berths.start(tmp_path, ["--no-auth"], env=s3_env(s3_proxy.url))
    # A client that gives up soon after Berth should have: a hang costs this test seconds.
    client = FaultClient(reg.url, timeout=(5, READ_TIMEOUT + SLACK + 2))
    pid = reg.proc.pid

    first = image(256 * 1024)
    failure = push(client, "s3/first", "1", first)
    assert failure is None, f"push in pass-through: {failure}"
    acked = [("s3/first", "1", first)]

    s3_proxy.mode = mode
    problems: list[str] = []
    retry_after = mode == "503"
    try:
        second = image(256 * 1024)
        before = s3_proxy.counts[mode]
        failure = push(client, "s3/second", "1", second)
        if failure is None:
            problems.append(f"push with S3 in mode {mode}: acknowledged, though S3 answered nothing right")
            acked.append(("s3/second", "1", second))
        else:
            assert s3_proxy.counts[mode] > before, f"the push failed without reaching the proxy: {failure}"
            problem = unavailable_problem(failure, 503, retry_after=retry_after)
            if problem:
                problems.append(f"push with S3 in mode {mode}: {problem}")
            if mode == "hang" and failure.seconds > READ_TIMEOUT + SLACK:
                problems.append(f"push with S3 hanging: answered after {failure.seconds:.1f}s "
                                f"(read timeout {READ_TIMEOUT:g}s)")

        before = s3_proxy.counts[mode]
        start = time.monotonic()
        try:
            r = client.get(f"/v2/s3/first/blobs/{first.layer_digest}")
        except Exception as e:  # noqa: BLE001 - a timeout or a cut connection is the finding
            problems.append(f"pull with S3 in mode {mode}: no answer after {time.monotonic() - start:.1f}s: {e!r}")
        else:
            took = time.monotonic() - start
            assert s3_proxy.counts[mode] > before, f"the blob GET did not reach the proxy: {r.status_code}"
            problem = unavailable_problem(r, 503, retry_after=retry_after)
            if problem:
                problems.append(f"pull with S3 in mode {mode}: {problem}")
            if mode == "hang" and took > READ_TIMEOUT + SLACK:
                problems.append(f"pull with S3 hanging: answered after {took:.1f}s (read timeout {READ_TIMEOUT:g}s)")
    finally:
        s3_proxy.mode = "pass"

    assert not problems, f"with S3 in mode {mode}:\n" + "\n".join(problems)

    if failure is not None:
        failure = push(client, "s3/second", "1", second)
        assert failure is None, f"push once S3 answers again (no restart): {failure}"
        acked.append(("s3/second", "1", second))
    for repo, tag, img in acked:
        pull_image(client, repo, tag, img)
    assert reg.proc.poll() is None and reg.proc.pid == pid, "berth was restarted or exited"
