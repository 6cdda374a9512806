"""Garbage collection against the real process: `berth gc` beside a running server, the
admin API, a crash in the middle of a run, and scrub."""

import hashlib
import json
import os
import signal
import subprocess
import time

import requests

from conftest import berth_env, start_berth, stop_berth
from .test_process import BERTH, NO_AUTH, restart

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
GC_ENV = {
    "BERTH_GC__GRACE_PERIOD": "1s",
    "BERTH_UPLOADS__PURGE_AFTER": "1s",
    "BERTH_GC__UNTAGGED_AGE": "0s",
    "BERTH_GC__SCHEDULE": "",
    "BERTH_SCRUB__SCHEDULE": "",
}


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def push_blob(url: str, repo: str, data: bytes) -> str:
    d = sha(data)
    r = requests.post(f"{url}/v2/{repo}/blobs/uploads/", params={"digest": d}, data=data)
    assert r.status_code == 201, r.text
    return d


def push_image(url: str, repo: str, tag: str, layers: list[bytes]) -> dict:
    config = json.dumps({"image": f"{repo}:{tag}"}).encode()
    blobs = {push_blob(url, repo, config): config}
    descs = []
    for layer in layers:
        d = push_blob(url, repo, layer)
        blobs[d] = layer
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(layer)})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
        "layers": descs,
    }).encode()
    r = requests.put(f"{url}/v2/{repo}/manifests/{tag}", data=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return {"repo": repo, "tag": tag, "digest": sha(manifest), "blobs": blobs}


def pulls_completely(url: str, image: dict) -> bool:
    r = requests.get(f"{url}/v2/{image['repo']}/manifests/{image['tag']}", headers={"Accept": OCI_MANIFEST})
    if r.status_code != 200 or sha(r.content) != image["digest"]:
        return False
    for d, content in image["blobs"].items():
        r = requests.get(f"{url}/v2/{image['repo']}/blobs/{d}")
        if r.status_code != 200 or r.content != content:
            return False
    return True


def blob_files(reg) -> set[str]:
    root = reg.data_dir / "blobs"
    return {f"sha256:{p.parent.name}" for p in root.rglob("*") if p.is_file()}


def wait_job(url: str, job: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        j = requests.get(f"{url}/api/v1/jobs/{job}").json()
        if j["state"] in ("succeeded", "failed", "dead"):
            return j
        assert time.monotonic() < deadline, j
        time.sleep(0.1)


def test_gc_cli_beside_the_server_dry_run_then_real_run(tmp_path):
    reg = start_berth(tmp_path, NO_AUTH, env=GC_ENV)
    try:
        keep = push_image(reg.url, "gc/cli", "keep", [b"shared-layer" * 100, os.urandom(2048)])
        drop = push_image(reg.url, "gc/cli", "drop", [b"shared-layer" * 100, os.urandom(4096)])
        assert requests.delete(f"{reg.url}/v2/gc/cli/manifests/drop").status_code == 202
        time.sleep(1.2)  # past the grace period
        before = blob_files(reg)

        def gc(*extra):
            out = subprocess.run([BERTH, "gc", "--data-dir", str(reg.data_dir), *extra], capture_output=True,
                                 text=True, timeout=120, env=berth_env(GC_ENV))
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)

        dry = gc("--dry-run")
        assert dry["dry_run"] is True
        assert dry["deleted_manifests"] == 1 and dry["deleted_blobs"] == 2, dry
        assert blob_files(reg) == before, "a dry run removes nothing"
        real = gc()
        for k in ("deleted_manifests", "deleted_blobs", "bytes_freed"):
            assert real[k] == dry[k], (k, dry, real)
        assert real["bytes_freed"] == 4096 + len(json.dumps({"image": "gc/cli:drop"}))
        unique = [d for d in drop["blobs"] if d not in keep["blobs"]]
        assert not set(unique) & blob_files(reg), "the deleted image's own blobs are gone"
        assert pulls_completely(reg.url, keep), "the kept image, sharing a layer, still pulls"
        jobs = requests.get(f"{reg.url}/api/v1/jobs", params={"kind": "gc"}).json()["jobs"]
        assert jobs[0]["state"] == "succeeded" and jobs[0]["result"]["bytes_freed"] == real["bytes_freed"]
        metrics = requests.get(f"{reg.url}/metrics").text
        assert f"berth_gc_last_run_bytes_freed {real['bytes_freed']}" in metrics, metrics
    finally:
        stop_berth(reg)


def test_kill_during_a_gc_run_loses_nothing_and_the_next_run_completes(tmp_path):
    # A slow delete rate keeps the run going long enough to be killed in the middle.
    env = {**GC_ENV, "BERTH_GC__DELETE_RATE": "20"}
    reg = start_berth(tmp_path, NO_AUTH, env=env)
    try:
        kept, dropped = [], []
        for i in range(30):
            img = push_image(reg.url, f"gc/crash{i % 3}", f"v{i}", [f"base-{i % 4}".encode() * 64, os.urandom(1024)])
            (kept if i % 2 == 0 else dropped).append(img)
        for img in dropped:
            assert requests.delete(f"{reg.url}/v2/{img['repo']}/manifests/{img['digest']}").status_code == 202
        time.sleep(1.2)
        job = requests.post(f"{reg.url}/api/v1/gc").json()["job"]
        time.sleep(0.6)
        assert requests.get(f"{reg.url}/api/v1/jobs/{job}").json()["state"] == "running", "GC should be mid-run"
        reg.proc.send_signal(signal.SIGKILL)
        reg.proc.wait()

        reg.proc = None
        restart_env = {**os.environ, **env, "BERTH_GC__DELETE_RATE": "0"}
        old = os.environ.copy()
        os.environ.update(restart_env)
        try:
            restart(reg, tmp_path)
        finally:
            os.environ.clear()
            os.environ.update(old)
        for img in kept:
            assert pulls_completely(reg.url, img), f"{img['repo']}:{img['tag']} lost by the killed run"
        # The restarted node takes over the dead process's job and finishes it.
        done = wait_job(reg.url, job)
        assert done["state"] == "succeeded" and done["attempts"] == 2, done
        # A blob the killed run had marked for deletion is finished once its short sweep
        # lease (5 s) runs out.
        time.sleep(5.2)
        done = wait_job(reg.url, requests.post(f"{reg.url}/api/v1/gc").json()["job"])
        assert done["state"] == "succeeded", done
        for img in kept:
            assert pulls_completely(reg.url, img), f"{img['repo']}:{img['tag']} lost after the second run"
        referenced = set().union(*(img["blobs"].keys() for img in kept))
        assert blob_files(reg) == referenced, "exactly the referenced blobs remain"
        scrub = wait_job(reg.url, requests.post(f"{reg.url}/api/v1/scrub").json()["job"])
        assert scrub["state"] == "succeeded", scrub
        assert scrub["result"]["corrupted"] == [] and scrub["result"]["missing"] == [], scrub
    finally:
        stop_berth(reg)


def test_scrub_cli_reports_corruption(tmp_path):
    reg = start_berth(tmp_path, NO_AUTH, env=GC_ENV)
    try:
        img = push_image(reg.url, "scrub/x", "v1", [os.urandom(3000)])
        layer = [d for d, c in img["blobs"].items() if len(c) == 3000][0]
        path = next((reg.data_dir / "blobs" / "sha256" / layer[7:9] / layer[7:]).iterdir())
        path.write_bytes(os.urandom(3000))
        out = subprocess.run([BERTH, "scrub", "--data-dir", str(reg.data_dir)], capture_output=True, text=True,
                             timeout=120, env=berth_env(GC_ENV))
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["corrupted"] == [f"{layer}@{path.name}"], report
        assert report["checked"] == 2
    finally:
        stop_berth(reg)
