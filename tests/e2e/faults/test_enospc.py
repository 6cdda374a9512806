"""A full disk: Berth's whole data directory (berth.db, blobs/, uploads/) on a 64 MiB ext4 image,
loop-mounted (tmpfs refuses O_DIRECT, so it would not exercise Berth's direct writes).

A filler file beside Berth's data takes the space, in two steps:

1. almost full: 512 KiB left, room for the database's few pages but not for a 1 MiB layer, so a
   monolithic and a chunked push run out of space while writing the layer (the blob store);
2. completely full: not one block left, so the database cannot grow either (SQLite's "database
   or disk is full"), for a new upload session and a manifest PUT whose blobs are already in.

Every request meanwhile either succeeds or gets 507 with `{"errors":[{"code":"UNAVAILABLE",
"message": "...out of space..."}]}`, fast (never a 500, never a hang); /healthz keeps answering,
and a pull of an image already in works or gets a clear error. Then the filler is deleted and
the same pushes succeed, without restarting Berth, and every image whose manifest got 201
(before, during or after) pulls back intact. The test reports every problem of every phase at
once.
"""

from __future__ import annotations

import requests

from .helpers import OCI_MANIFEST, MiB, FaultClient, image, pull_image, push, put_manifest, sha256
from .helpers import unavailable_problem

OUT_OF_SPACE = r"out of space"
FAST = 10.0  # seconds: a request on a full disk is answered within this
ALMOST_FULL = 512 * 1024  # bytes left free in step 1


def test_full_disk_answers_507_and_recovers_without_restart(loop_ext4, berths, tmp_path):
    reg = berths.start(tmp_path, ["--no-auth"], env={"BERTH_GC__SCHEDULE": "", "BERTH_SCRUB__SCHEDULE": ""})
    assert (loop_ext4.mountpoint / "berth.db").exists(), "berth.db must be on the small disk"
    client = FaultClient(reg.url)
    pid = reg.proc.pid
    acked: list[tuple[str, str, object]] = []  # (repo, tag, image) whose manifest PUT got 201
    problems: list[str] = []
    seen_507: list[str] = []
    retry: list[tuple[str, str, object, bool | None]] = []  # None: the manifest PUT only

    first = image(256 * 1024)
    failure = push(client, "full/before", "1", first)
    assert failure is None, f"push before the disk is full: {failure}"
    acked.append(("full/before", "1", first))
    # The blobs of this one go up now, its manifest once the disk is full.
    late = image(64 * 1024)
    failure = push(client, "full/late-manifest", "prep", late)
    assert failure is None, f"push before the disk is full: {failure}"
    acked.append(("full/late-manifest", "prep", late))

    def attempt(where: str, repo: str, tag: str, img, chunked: bool | None, must_fail: bool = False) -> None:
        failure = put_manifest(client, repo, tag, img) if chunked is None else push(client, repo, tag, img, chunked)
        what = f"{where}: {repo}:{tag} ({'manifest PUT' if chunked is None else f'chunked={chunked}'})"
        if failure is None:
            acked.append((repo, tag, img))
            if must_fail:
                problems.append(f"{what}: accepted without the space for it (was the disk not full?)")
            return
        retry.append((repo, tag, img, chunked))
        problem = unavailable_problem(failure, 507, OUT_OF_SPACE)
        if problem:
            problems.append(f"{what}: {problem}")
        else:
            seen_507.append(f"{what}: {failure.step}")
        if failure.seconds > FAST:
            problems.append(f"{what}: {failure.step} took {failure.seconds:.1f}s")

    def still_serving(where: str) -> None:
        r = requests.get(reg.url + "/healthz", timeout=5)
        if r.status_code != 200:
            problems.append(f"{where}: /healthz {r.status_code} {r.text[:200]!r}")
        # A pull needs no space (at most it records that the blob was touched): it works, or
        # gets a clear error, never a 500.
        for path in ["/v2/full/before/manifests/1", *(f"/v2/full/before/blobs/{d}" for d in first.blobs)]:
            r = client.get(path, headers={"Accept": OCI_MANIFEST})
            if r.status_code == 200:
                if "/blobs/" in path and sha256(r.content) != path.rsplit("/", 1)[1]:
                    problems.append(f"{where}: GET {path}: 200 with the wrong bytes")
                continue
            if unavailable_problem(r, 507, OUT_OF_SPACE) and unavailable_problem(r, 503):
                problems.append(f"{where}: pull: {unavailable_problem(r, 507, OUT_OF_SPACE)}")

    # Step 1: room for metadata, not for a 1 MiB layer.
    # Straight to 512 KiB free, never through full: a background write of Berth's (the audit
    # log) that met a full disk here would be a step 2 failure in step 1's place.
    loop_ext4.leave_free(ALMOST_FULL)
    attempt("almost full", "full/mono", "1", image(MiB), False, must_fail=True)
    loop_ext4.leave_free(ALMOST_FULL)  # whatever the first attempt left behind
    attempt("almost full", "full/chunked", "1", image(MiB), True, must_fail=True)
    still_serving("almost full")

    # Step 2: not one block left.
    loop_ext4.leave_free(0)
    assert loop_ext4.free_bytes() < 64 * 1024, f"the disk still has {loop_ext4.free_bytes()} bytes free"
    attempt("full", "full/small", "1", image(4096), False)
    attempt("full", "full/late-manifest", "late", late, None)
    still_serving("full")

    if not problems:
        assert seen_507, "no request ran out of space: the disk was not full"

    # Space again: the same pushes succeed, with the same process.
    (loop_ext4.mountpoint / "filler").unlink()
    still_serving("after freeing space")
    for repo, tag, img, chunked in retry:
        failure = put_manifest(client, repo, tag, img) if chunked is None else push(client, repo, tag, img, chunked)
        if failure is None:
            acked.append((repo, tag, img))
        else:
            problems.append(f"after freeing space (no restart): {repo}:{tag}: {failure}")

    for repo, tag, img in acked:
        try:
            pull_image(client, repo, tag, img)
        except AssertionError as e:
            problems.append(f"acknowledged {repo}:{tag} does not pull back intact: {e}")
    if reg.proc.poll() is not None or reg.proc.pid != pid:
        problems.append(f"berth exited ({reg.proc.returncode}) or was restarted")

    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
