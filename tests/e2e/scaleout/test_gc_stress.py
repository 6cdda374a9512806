"""Garbage collection under load on three `berth serve` processes sharing one PostgreSQL
database and one S3 prefix (issue 16, row locks): for a few seconds, pushers (through every
node), a deleter, a re-tagger, GC jobs queued on every node and `berth gc` processes run at
once. Layers come from a small shared pool, so pushes keep relying on blobs that deletes have
just released and GC is about to collect. Afterwards every image acknowledged and not deleted
pulls back whole through every node, no request got a 5xx, and once everything is deleted and
collected neither the database nor the bucket holds a blob.

`GC_STRESS_SECONDS` sets the duration (default 8).
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time

from auth.helpers import OCI_MANIFEST, push_blob, scope, unique

from .test_scaleout import GC_ENV, Img, pull_image

SECONDS = float(os.environ.get("GC_STRESS_SECONDS", "8"))
ENV = {**GC_ENV, "BERTH_GC__DELETE_RATE": "0"}  # no throttle: sweeps race the pushes


def test_gc_under_pushes_deletes_retags_and_gc_runs_on_three_processes_loses_nothing(make_cluster):
    cluster = make_cluster("gc-stress", ENV)
    repos = [unique("so/stress") for _ in range(2)]
    token = cluster.token(1, *(scope(r, "pull", "push", "delete") for r in repos))
    clients = {i: cluster.client(i, token) for i in (1, 2, 3)}
    admins = {i: cluster.admin(i) for i in (1, 2, 3)}
    pool = [os.urandom(4096 + i) for i in range(6)]  # layers many images share

    live: list[Img] = []  # acknowledged and not deleted
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []
    counts = {"pushed": 0, "refused": 0, "deleted": 0, "gc_jobs": 0, "gc_cli": 0}

    def count(what: str) -> None:
        with lock:
            counts[what] += 1

    def check(r, what: str) -> None:
        if r.status_code >= 500:
            errors.append(f"{what}: {r.status_code} {r.text[:300]}")

    def push(node: int, img: Img) -> bool:
        """Pushes `img` through `node`: True when the manifest was acknowledged. A manifest
        refused because GC took a layer between its HEAD and the PUT is pushed again once."""
        c = clients[node]
        for attempt in range(2):
            for digest, data in img.blobs.items():
                r = c.head(f"/v2/{img.repo}/blobs/{digest}")
                check(r, "blob HEAD")
                if r.status_code == 200 and attempt == 0:
                    continue  # as clients do: an existing layer is not uploaded again
                r = push_blob(c, img.repo, data)
                check(r, "blob push")
                if r.status_code != 201:
                    errors.append(f"blob push through node {node}: {r.status_code} {r.text[:300]}")
                    return False
            r = c.put(f"/v2/{img.repo}/manifests/{img.tag}", data=img.manifest,
                      headers={"Content-Type": OCI_MANIFEST})
            check(r, "manifest PUT")
            if r.status_code == 201:
                return True
            if r.status_code != 400 or "MANIFEST_BLOB_UNKNOWN" not in r.text:
                errors.append(f"manifest PUT through node {node}: {r.status_code} {r.text[:300]}")
                return False
            count("refused")
        return False

    def pusher(p: int) -> None:
        rng = random.Random(p)
        n = 0
        while not stop.is_set():
            node = 1 + (p + n) % 3
            layers = rng.sample(pool, 2) + [os.urandom(2048)]
            img = Img(repos[p % 2], f"p{p}-{n}", layers)
            if push(node, img):
                with lock:
                    live.append(img)
                count("pushed")
            n += 1

    def retagger() -> None:
        n = 0
        while not stop.is_set():
            img = Img(repos[0], "moving", random.sample(pool, 1) + [os.urandom(1024)])
            if push(1 + n % 3, img):  # the image it replaces is untagged: GC collects it
                with lock:
                    live[:] = [i for i in live if not (i.repo == repos[0] and i.tag == "moving")]
                    live.append(img)
            n += 1

    def deleter() -> None:
        rng = random.Random(99)
        while not stop.is_set():
            with lock:
                candidates = [i for i in live if i.tag != "moving"]
                victim = rng.choice(candidates) if len(candidates) > 4 else None
                if victim:
                    live.remove(victim)
            if victim is None:
                time.sleep(0.02)
                continue
            r = clients[rng.randint(1, 3)].delete(f"/v2/{victim.repo}/manifests/{victim.digest}")
            check(r, "manifest DELETE")
            if r.status_code != 202:
                errors.append(f"DELETE {victim.repo}@{victim.digest}: {r.status_code} {r.text[:300]}")
            count("deleted")

    def gc_jobs() -> None:
        n = 0
        while not stop.is_set():
            r = admins[1 + n % 3].post("/api/v1/gc")
            check(r, "POST /api/v1/gc")
            if r.status_code == 202:
                count("gc_jobs")
            n += 1
            time.sleep(0.3)

    def gc_processes() -> None:
        # `berth gc` beside the servers, as an operator runs it: a process of its own.
        node = cluster.node(1)
        while not stop.is_set():
            run = subprocess.run([node.binary, "gc"], env=node.env, capture_output=True, text=True, timeout=120)
            if run.returncode != 0:
                errors.append(f"berth gc exited {run.returncode}: {run.stderr[-2000:]}")
            count("gc_cli")
            time.sleep(0.5)

    threads = [threading.Thread(target=pusher, args=(p,)) for p in range(3)]
    threads += [threading.Thread(target=f) for f in (retagger, deleter, gc_jobs, gc_processes)]
    for t in threads:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join(timeout=180)
        assert not t.is_alive(), "a stress thread hangs"
    print(f"gc stress: {counts}, {len(live)} images alive")
    assert not errors, "\n".join(errors[:20])
    assert counts["pushed"] >= 10 and counts["deleted"] >= 3 and counts["gc_cli"] >= 2, counts

    def run_gc_job() -> dict:
        r = admins[2].post("/api/v1/gc")
        assert r.status_code == 202, f"POST /api/v1/gc: {r.status_code} {r.text[:300]}"
        job = r.json()["job"]
        deadline = time.monotonic() + 60
        while True:
            j = admins[3].get(f"/api/v1/jobs/{job}").json()
            if j["state"] in ("succeeded", "failed", "dead"):
                assert j["state"] == "succeeded", j
                assert not j["result"].get("errors"), j["result"]
                return j["result"]
            assert time.monotonic() < deadline, f"GC job {job} did not finish: {j}"
            time.sleep(0.1)

    # What is left was released more than the grace period (1 s) ago once this has slept.
    time.sleep(1.5)
    run_gc_job()
    for img in live:
        for node in (1, 2, 3):
            pull_image(clients[node], img, img.digest, f" through node {node}")

    for img in live:
        r = clients[1].delete(f"/v2/{img.repo}/manifests/{img.digest}")
        assert r.status_code == 202, f"DELETE {img.repo}@{img.digest}: {r.status_code} {r.text[:300]}"
    time.sleep(1.5)
    run_gc_job()
    usage = admins[1].get("/api/v1/storage").json()
    assert (usage["blob_count"], usage["stored_bytes"]) == (0, 0), usage
    assert cluster.s3_blob_digests() == set(), "bytes left in S3 after everything was collected"
