"""A disk that returns EIO: Berth's data directory on eiofs.py, a FUSE passthrough whose control
file makes reads or writes under blobs/ and uploads/ fail with EIO (berth.db lives on the same
FUSE mount and is never faulted).

- writes failing (when the upload is created, appended to, or moved under blobs/): the push
  gets 503 `UNAVAILABLE` whose message names an I/O error of the blob store;
- reads failing from the first byte: a blob GET gets 503 `UNAVAILABLE`;
- reads failing after the first MiB: the GET has sent its 200 and headers, so Berth can only cut
  the connection; the client must notice (an error or a short body), never get a silently wrong
  body;
- faults off: the same pushes succeed and everything acknowledged pulls back intact, without
  restarting Berth.
"""

from __future__ import annotations

from .helpers import OCI_MANIFEST, MiB, FaultClient, fetch, image, pull_image, push, sha256, unavailable_problem

BLOB_STORE_IO = r"blob store.*(i/o|input/output)|(i/o|input/output).*blob store"


def test_eio_answers_503_and_recovers_without_restart(eio_fs, berths, tmp_path):
    reg = berths.start(tmp_path, ["--no-auth"], env={"BERTH_GC__SCHEDULE": "", "BERTH_SCRUB__SCHEDULE": ""})
    assert (eio_fs.backing / "berth.db").exists(), "berth.db must be on the FUSE mount"
    client = FaultClient(reg.url)
    pid = reg.proc.pid

    big = image(4 * MiB)
    failure = push(client, "eio/big", "1", big)
    assert failure is None, f"push with no fault: {failure}"
    acked = [("eio/big", "1", big)]
    layer_url = f"/v2/eio/big/blobs/{big.layer_digest}"

    problems: list[str] = []

    # Writes fail, at three places of a push: creating the upload (POST), appending to it
    # (PATCH), and moving the finished blob under blobs/ (the closing PUT).
    retry = []
    cases = [
        ("eio/create", False, ("write blobs/", "write uploads/")),
        ("eio/append", True, ("data uploads/",)),
        ("eio/commit", False, ("write blobs/",)),
    ]
    for repo, chunked, rules in cases:
        eio_fs.set(*rules)
        img = image(256 * 1024)
        hits = len(eio_fs.hits())
        failure = push(client, repo, "1", img, chunked=chunked)
        if failure is None:
            problems.append(f"{repo}: pushed while {rules} fail")
            acked.append((repo, "1", img))
            continue
        retry.append((repo, img, chunked))
        assert len(eio_fs.hits()) > hits, f"{repo}: the push failed without meeting the fault: {failure}"
        problem = unavailable_problem(failure, 503, BLOB_STORE_IO)
        if problem:
            problems.append(f"{repo} with {rules} failing: {problem}")

    # Reads under blobs/ fail from the first byte: nothing is sent yet, so the GET can answer 503.
    eio_fs.set("read blobs/")
    hits = len(eio_fs.hits())
    got = fetch(client, layer_url)
    assert len(eio_fs.hits()) > hits, f"the blob GET never read the faulted file: {got.status}"
    if got.status == 200 and got.error is None and sha256(got.body) == big.layer_digest:
        problems.append("GET of a blob whose every read fails: 200 with the right bytes (no fault met?)")
    else:
        problem = unavailable_problem(got, 503, BLOB_STORE_IO)
        if problem:
            problems.append(f"GET of a blob whose first read fails: {problem}")
    r = client.get("/v2/eio/big/manifests/1", headers={"Accept": OCI_MANIFEST})
    if r.status_code != 200:
        problems.append(f"manifest GET (metadata only) with blob reads failing: {r.status_code} {r.text[:200]!r}")

    # Reads fail past the first MiB: the answer has started, so only a cut connection is honest.
    eio_fs.set(f"read blobs/ {MiB}")
    hits = len(eio_fs.hits())
    got = fetch(client, layer_url)
    assert len(eio_fs.hits()) > hits, f"the streamed GET never met the fault: {got.status}"
    if got.status is None:
        problems.append(f"GET failing after the first MiB: no answer at all ({got.error!r}), expected a 200 "
                        "cut short or a 503")
    elif got.status == 200:
        length = got.response.headers.get("Content-Length")
        if got.error is None and len(got.body) == len(big.layer):
            digest = sha256(got.body)
            problems.append(f"GET failing mid-stream delivered {len(got.body)} bytes with no error, digest {digest}"
                            f"{' (a silently wrong body)' if digest != big.layer_digest else ''}")
        elif got.error is None and (length is None or int(length) == len(got.body)):
            problems.append(f"GET failing mid-stream: a short body ({len(got.body)} bytes) that the client "
                            f"cannot tell from a whole one (Content-Length {length})")
    else:  # Berth read past the first MiB before answering: a 503 is right then
        problem = unavailable_problem(got, 503, BLOB_STORE_IO)
        if problem:
            problems.append(f"GET failing mid-stream, answered before streaming: {problem}")

    # Faults off: the same pushes succeed, everything acknowledged is intact, same process.
    eio_fs.clear()
    for repo, img, chunked in retry:
        failure = push(client, repo, "1", img, chunked=chunked)
        if failure is None:
            acked.append((repo, "1", img))
        else:
            problems.append(f"{repo} once EIO is off (no restart): {failure}")
    for repo, tag, img in acked:
        try:
            pull_image(client, repo, tag, img)
        except AssertionError as e:
            problems.append(f"acknowledged {repo}:{tag} does not pull back intact: {e}")
    if reg.proc.poll() is not None or reg.proc.pid != pid:
        problems.append(f"berth exited ({reg.proc.returncode}) or was restarted")

    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
