"""PostgreSQL restarted in the middle of pushes: Berth with `database.url` at a PostgreSQL of the
test's own (blobs on the filesystem), authentication on (the admin's Basic credentials, so that
callers are checked against the database too), three threads pushing small images in a loop.

PostgreSQL is stopped (`pg_ctl stop -m fast`: every connection Berth holds is cut), left down
for four seconds (longer than Berth's connect timeout, 2 s here) and started again. Every request that fails meanwhile must get 503 `UNAVAILABLE`
(never a 500, a 401 or a cut connection) within the configured timeouts; once PostgreSQL is
back, every pusher succeeds again without Berth being restarted, and every image whose manifest
PUT got 201 pulls back intact.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

from .helpers import FaultClient, Failure, image, pull_image, push, unavailable_problem

PUSHERS = 3
# Down longer than Berth waits for a connection (BERTH_DATABASE__CONNECT_TIMEOUT, which is also
# its pool's acquire timeout): requests arriving in the outage must give up with a 503, not only
# the ones whose connection the stop cuts.
DOWN_SECONDS = 4.0
CONNECT_TIMEOUT = 2.0
SLACK = 7.0  # seconds past the connect timeout a failing request may take
WARMUP_DEADLINE = 30.0  # every pusher has one image in by then
RECOVERY_DEADLINE = 30.0  # every pusher has two more in this long after PostgreSQL is back


@dataclass
class Pusher:
    index: int
    acked: list = field(default_factory=list)  # (repo, tag, image, finished at)
    failures: list[tuple[float, Failure]] = field(default_factory=list)  # (started at, failure)
    crashed: BaseException | None = None

    def successes_after(self, t: float) -> int:
        return sum(1 for *_, done in self.acked if done > t)


def test_postgres_restart_mid_push(postgres, berths, tmp_path):
    password = secrets.token_urlsafe(24)
    reg = berths.start(tmp_path, env={
        "BERTH_ADMIN_PASSWORD": password,
        "BERTH_AUTH__AUTO_CREATE_PROJECTS": "true",
        "BERTH_DATABASE__URL": postgres.url,
        "BERTH_DATABASE__CONNECT_TIMEOUT": f"{CONNECT_TIMEOUT:g}s",
        "BERTH_GC__SCHEDULE": "",
        "BERTH_SCRUB__SCHEDULE": "",
    })
    creds = ("admin", password)
    pid = reg.proc.pid
    stop = threading.Event()
    pushers = [Pusher(i) for i in range(PUSHERS)]

    def run(p: Pusher) -> None:
        client = FaultClient(reg.url, basic=creds)
        n = 0
        try:
            while not stop.is_set():
                img = image(32 * 1024)
                repo, tag = f"pg/pusher{p.index}", f"t{n}"
                n += 1
                started = time.monotonic()
                failure = push(client, repo, tag, img)
                if failure is None:
                    p.acked.append((repo, tag, img, time.monotonic()))
                else:
                    p.failures.append((started, failure))
                    time.sleep(0.1)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            p.crashed = e

    threads = [threading.Thread(target=run, args=(p,), name=f"pusher{p.index}", daemon=True) for p in pushers]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + WARMUP_DEADLINE
        while not all(p.acked for p in pushers):
            assert time.monotonic() < deadline, "pushers got nothing in before the restart: " + "; ".join(
                str(f) for p in pushers for _, f in p.failures[:3])
            assert not any(p.crashed for p in pushers), [p.crashed for p in pushers]
            time.sleep(0.1)

        down_at = time.monotonic()
        postgres.stop("fast")
        time.sleep(DOWN_SECONDS)
        postgres.start()
        up_at = time.monotonic()

        deadline = up_at + RECOVERY_DEADLINE
        while not all(p.successes_after(up_at) >= 2 for p in pushers):
            if time.monotonic() > deadline or any(p.crashed for p in pushers):
                break
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)

    assert not any(p.crashed for p in pushers), [p.crashed for p in pushers]
    problems = []
    failures = [(p.index, started, f) for p in pushers for started, f in p.failures]
    for index, started, f in failures:
        problem = unavailable_problem(f, 503)
        if problem:
            problems.append(f"pusher {index} at {started - down_at:+.1f}s from the stop: {problem}")
        elif f.seconds > CONNECT_TIMEOUT + SLACK:
            problems.append(f"pusher {index}: {f.step} took {f.seconds:.1f}s to answer 503")
    for p in pushers:
        if p.successes_after(up_at) < 2:
            problems.append(f"pusher {p.index}: {p.successes_after(up_at)} pushes acknowledged in the "
                            f"{RECOVERY_DEADLINE:g}s after PostgreSQL came back (no restart of berth)")
    assert not problems, f"{len(failures)} failed pushes:\n" + "\n".join(problems[:30])
    assert failures, "no request failed while PostgreSQL was down: the restart missed the pushes"

    client = FaultClient(reg.url, basic=creds)
    for p in pushers:
        for repo, tag, img, _ in p.acked:
            pull_image(client, repo, tag, img)
    assert reg.proc.poll() is None and reg.proc.pid == pid, "berth was restarted or exited"
