"""The package inventory and SBOMs of artifacts, read through
`/api/v1/repositories/<repo>/artifacts/<digest>/{inventory,sbom}`, for images of real content
pushed by real clients (see conftest.py), checked against syft's reading of the same layout.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest

from auth.helpers import Admin, Client, new_secret, push_blob
from clients.api import RegistryAPI
from clients.images import OCI_EMPTY, OCI_MANIFEST, Image, random_tar, sha256
from conftest import ADMIN_USER, IN_CI, start_berth, stop_berth

from . import content
from .compare import compare, known_differences
from .conftest import TAG, InventoryAPI, timed, unique_repo

DEBIAN_OS = {
    "id": "debian",
    "version_id": "12",
    "version_codename": "bookworm",
    "pretty_name": "Debian GNU/Linux 12 (bookworm)",
}
# The layer (index in the manifest) each ecosystem's packages come from (see conftest.py), but
# for the one npm package the top layer adds back under its opaque directory.
LAYER_OF = {"deb": 0, "pypi": 1, "npm": 2, "golang": 3}
TOP_LAYER = 4
READDED = f"{content.OPAQUE_DIR}/{content.OPAQUE_KEPT}"
SPDX = "application/spdx+json"
CYCLONEDX = "application/vnd.cyclonedx+json"


def by_ecosystem(packages: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in packages:
        out.setdefault(p["ecosystem"], []).append(p)
    return out


def package_keys(packages: list[dict]) -> Counter:
    return Counter((p["ecosystem"], p["name"], p["version"], p["path"]) for p in packages)


def error_body(r) -> dict:
    """The error document of a 4xx: `{"errors": [{"code": ..., "message": ...}]}`."""
    assert r.headers.get("Content-Type", "").split(";")[0] == "application/json", r.headers
    body = r.json()
    assert body["errors"] and all(e.get("code") and e.get("message") for e in body["errors"]), body
    return body


@pytest.fixture(scope="module")
def image_inventory(pushed_image, inventory_api) -> dict:
    with timed("berth: inventory of the image"):
        inventory = inventory_api.inventory(pushed_image.repo, pushed_image.digest)
    # Beside syft.json in the session's directory, which SCAN_KEEP=1 keeps.
    (pushed_image.built.work / "berth-inventory.json").write_text(json.dumps(inventory, indent=1))
    return inventory


def test_inventory_of_real_image(pushed_image, image_inventory):
    inv = image_inventory
    assert inv["kind"] == "image" and inv["digest"] == pushed_image.digest
    assert inv["coverage"] == {"status": "complete"}
    assert inv["os"] == DEBIAN_OS
    assert inv.get("errors", []) == [], f"files Berth could not parse: {inv['errors']}"
    assert inv.get("skipped", []) == [], f"what Berth did not read: {inv['skipped']}"

    packages = by_ecosystem(inv["packages"])
    assert set(packages) == set(LAYER_OF), f"ecosystems found: {sorted(packages)}"
    for ecosystem, listed in packages.items():
        wrong = [p for p in listed if p["layer"] != (TOP_LAYER if p["path"] == READDED else LAYER_OF[ecosystem])]
        assert not wrong, f"{ecosystem} packages attributed to another layer: {wrong[:5]}"

    # dpkg: every package of the status database, with its source and architecture.
    debs = {p["name"]: p for p in packages["deb"]}
    status = pushed_image.built.dpkg_status.read_text()
    installed = {
        stanza.split("\n", 1)[0].removeprefix("Package: ")
        for stanza in status.strip().split("\n\n")
        if "Status: install ok installed" in stanza
    }
    assert set(debs) == installed
    assert all(p["path"] == "var/lib/dpkg/status" for p in debs.values())
    assert debs["coreutils"]["arch"] == "amd64"
    # libc6's source is glibc; a package built from its own name has itself as source.
    assert debs["libc6"]["source"]["name"] == "glibc"
    assert debs["bash"]["source"]["name"] == "bash"

    # Python: pip's dist-info and setuptools' egg-info are read; the dist-info the top layer
    # deleted with a whiteout is not.
    python = {p["name"].lower(): p for p in packages["pypi"]}
    expected = {spec.split("==")[0].lower(): spec.split("==")[1] for spec in content.PYTHON_PACKAGES}
    expected.pop("attrs")
    name, version = content.EGG_INFO_PACKAGE
    expected[name] = version
    assert {n: p["version"] for n, p in python.items()} == expected
    assert python["six"]["path"] == f"{content.SITE_PACKAGES}/six-1.16.0-py3.11.egg-info/PKG-INFO"
    assert python["requests"]["path"] == f"{content.SITE_PACKAGES}/requests-2.32.3.dist-info/METADATA"

    # npm: what the lock file installed, scoped and nested packages included, less what the
    # opaque directory of the top layer hides.
    lock = json.loads((content.HERE / "app/package-lock.json").read_text())
    locked = {
        f"app/{path}/package.json": (path.rsplit("node_modules/", 1)[1], entry["version"])
        for path, entry in lock["packages"].items()
        if path and not (f"app/{path}".startswith(content.OPAQUE_DIR + "/") and f"app/{path}/package.json" != READDED)
    }
    assert any("/node_modules/send/node_modules/" in p for p in locked), "the lock file has no nested package"
    assert {p["path"]: (p["name"], p["version"]) for p in packages["npm"]} == locked
    names = {p["name"] for p in packages["npm"]}
    assert "@babel/code-frame" in names and "@babel/helper-validator-identifier" not in names

    # Go: syft's own module, its dependencies and the Go version it was built with.
    golang = {p["name"]: p for p in packages["golang"]}
    assert "stdlib" in golang and "github.com/anchore/syft" in golang
    assert all(p["path"] == "usr/local/bin/syft" for p in golang.values())


def test_inventory_equals_syft(pushed_image, image_inventory):
    with timed("syft: waiting for its report"):
        report = pushed_image.syft_report()
    assert report["source"]["metadata"]["manifestDigest"] == pushed_image.digest
    distro = report["distro"]
    assert image_inventory["os"] == {
        "id": distro["id"],
        "version_id": distro["versionID"],
        "version_codename": distro["versionCodename"],
        "pretty_name": distro["prettyName"],
    }

    result = compare(report, image_inventory["packages"], known_differences())
    print(result.report())
    for ecosystem, (syft_count, berth_count) in result.counts.items():
        assert syft_count > 0 and berth_count > 0, f"nothing to compare for {ecosystem}:\n{result.report()}"
    assert not result.unexplained and not result.unused_rows, (
        "Berth's inventory and syft's differ beyond tests/e2e/scan/known_differences.csv:\n" + result.report()
    )

    # dpkg packages: the same source package (what Debian's advisories are keyed by) and
    # architecture. syft leaves the source out when it is the binary package itself.
    syft_debs = {a["name"]: a["metadata"] for a in report["artifacts"] if a["type"] == "deb"}
    mismatches = []
    for p in image_inventory["packages"]:
        if p["ecosystem"] != "deb":
            continue
        m = syft_debs[p["name"]]
        expected = ({"name": m.get("source") or p["name"], "version": m.get("sourceVersion") or m["version"]},
                    m["architecture"])
        if (p["source"], p["arch"]) != expected:
            mismatches.append(f"{p['name']}: syft {expected}, berth {(p['source'], p['arch'])}")
    assert not mismatches, "dpkg source or architecture differ:\n" + "\n".join(mismatches)


def test_index_is_inventoried_per_platform(pushed_index, inventory_api, image_inventory):
    pushed, index = pushed_index
    with timed("berth: inventory of the two-platform index"):
        inv = inventory_api.inventory(pushed.repo, index.manifest.digest)
    assert inv["kind"] == "index" and inv["digest"] == index.manifest.digest
    platforms = {p["platform"]: p for p in inv["platforms"]}
    assert set(platforms) == {"linux/amd64", "linux/arm64"}, inv["platforms"]
    for image in index.images:
        platform = platforms[f"linux/{image.architecture}"]
        assert platform["digest"] == image.manifest.digest
        assert platform["coverage"] == {"status": "complete"}
        assert platform["os"] == DEBIAN_OS
        # The same layers: the same packages, from the same files of the same layers.
        assert package_keys(platform["packages"]) == package_keys(image_inventory["packages"])


def test_missing_layer_makes_inventory_incomplete(pushed_image, skopeo, registry, inventory_api, image_inventory):
    """A repository that lost one layer of an image (here deleted through the registry API)
    gets an inventory that says so and names the layer; the other layers are still read."""
    repo = unique_repo("sparse")
    with timed("skopeo copy docker:// -> docker:// (cross-repository mount)"):
        skopeo.copy(skopeo.ref(pushed_image.repo, TAG), skopeo.ref(repo, TAG), timeout=600)
    node_layer = pushed_image.built.image.layers[LAYER_OF["npm"]].digest
    api = RegistryAPI(registry.url, registry.creds)
    r = api.request("DELETE", f"/v2/{repo}/blobs/{node_layer}")
    assert r.status_code == 202, f"DELETE blob {node_layer}: {r.status_code} {r.text[:300]}"
    assert not api.blob_exists(repo, node_layer)

    with timed("berth: inventory with a layer missing"):
        inv = inventory_api.inventory(repo, pushed_image.digest)
    assert inv["coverage"] == {"status": "incomplete", "missing_layers": [node_layer]}
    # Everything but what the node layer held: the package the top layer adds back stays.
    complete = [p for p in image_inventory["packages"] if p["layer"] != LAYER_OF["npm"]]
    assert [p["path"] for p in complete if p["ecosystem"] == "npm"] == [READDED]
    assert package_keys(inv["packages"]) == package_keys(complete)


def test_artifact_is_not_scannable(oras_client, registry, inventory_api, tmp_path):
    """An SBOM pushed as an OCI artifact (as `oras push --artifact-type application/spdx+json`
    writes it: the empty config, the document as its one layer) has nothing to inventory."""
    repo = unique_repo("artifact")
    container = oras_client.get_container(f"{registry.host}/{repo}:sbom")

    def upload(path: Path, media_type: str, title: str | None = None) -> dict:
        data = path.read_bytes()
        descriptor = {"mediaType": media_type, "digest": sha256(data), "size": len(data)}
        if title:
            descriptor["annotations"] = {"org.opencontainers.image.title": title}
        r = oras_client.upload_blob(str(path), container, descriptor)
        assert r.status_code in (200, 201), f"blob upload: {r.status_code} {r.text[:300]}"
        return descriptor

    document = tmp_path / "sbom.spdx.json"
    document.write_text(json.dumps({"spdxVersion": "SPDX-2.3", "name": "berth e2e", "packages": []}))
    config = tmp_path / "config.json"
    config.write_text("{}")
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SPDX,
        "config": upload(config, OCI_EMPTY),
        "layers": [upload(document, SPDX, "sbom.spdx.json")],
    }
    r = oras_client.upload_manifest(manifest, container)
    assert r.status_code == 201, f"manifest PUT: {r.status_code} {r.text[:300]}"
    digest = r.headers["Docker-Content-Digest"]

    inv = inventory_api.inventory(repo, digest)
    assert inv["kind"] == "image" and inv["digest"] == digest
    assert inv["coverage"]["status"] == "not_scannable" and inv["coverage"]["reason"], inv
    assert inv["packages"] == [] and inv["os"] is None
    # No SBOM of something that is not an image.
    r = inventory_api.sbom(repo, digest, "spdx")
    assert r.status_code == 400, f"{r.status_code} {r.text[:300]}"
    error_body(r)


def _validators():
    try:
        from .sbom_validation import validate_cyclonedx, validate_spdx
    except ImportError as e:
        message = f"tests/e2e/scan/sbom_validation.py or its requirements are missing: {e}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return {"spdx": validate_spdx, "cyclonedx": validate_cyclonedx}


def purls(fmt: str, document: dict) -> list[str]:
    """Every purl of a package the document lists, but the image's own (`pkg:oci/...`)."""
    if fmt == "spdx":
        found = [
            ref["referenceLocator"]
            for package in document["packages"]
            for ref in package.get("externalRefs", [])
            if ref["referenceType"] == "purl"
        ]
    else:
        found = [c["purl"] for c in document.get("components", []) if c.get("purl")]
    return [p for p in found if not p.startswith("pkg:oci/")]


@pytest.mark.parametrize("fmt, media_type", [("spdx", SPDX), ("cyclonedx", CYCLONEDX)])
def test_sbom_validates_and_lists_the_inventory(pushed_image, inventory_api, image_inventory, fmt, media_type):
    validate = _validators()[fmt]
    with timed(f"berth: SBOM ({fmt})"):
        r = inventory_api.sbom(pushed_image.repo, pushed_image.digest, fmt)
    assert r.status_code == 200, f"{r.status_code} {r.text[:500]}"
    assert r.headers["Content-Type"].split(";")[0] == media_type
    document = r.json()
    validate(document)

    # One purl per package of the inventory, of the ecosystem's purl type.
    listed = purls(fmt, document)
    assert len(listed) == len(image_inventory["packages"])
    assert Counter(unquote(p)[4:].split("/", 1)[0] for p in listed) == Counter(
        p["ecosystem"] for p in image_inventory["packages"]
    )
    for ecosystem, name in (("deb", "coreutils"), ("npm", "@babel/code-frame"), ("pypi", "requests")):
        version = next(p["version"] for p in image_inventory["packages"] if (p["ecosystem"], p["name"]) == (ecosystem, name))
        assert any(f"/{name}@{version}" in unquote(p) for p in listed), f"no purl for {ecosystem} {name} {version}"


def test_unknown_format_is_400(pushed_image, inventory_api):
    r = inventory_api.sbom(pushed_image.repo, pushed_image.digest, "xml")
    assert r.status_code == 400, f"{r.status_code} {r.text[:300]}"
    assert "xml" in error_body(r)["errors"][0]["message"]


def test_digest_not_in_repository_is_404(pushed_image, inventory_api):
    absent = sha256(secrets.token_bytes(16))
    layer = pushed_image.built.image.layers[0].digest  # a blob of the repository, not an artifact
    for digest in (absent, layer):
        for what in ("inventory", "sbom"):
            r = inventory_api.get(pushed_image.repo, digest, what)
            assert r.status_code == 404, f"{what} of {digest}: {r.status_code} {r.text[:300]}"
            error_body(r)


def test_pull_permission_is_required(tmp_path):
    """On a berth of its own (the session's user is no admin, so it cannot make a second user):
    the owner of a private project reads the inventory; another user gets 403, nobody 401."""
    password = new_secret()
    reg = start_berth(tmp_path, env={"BERTH_ADMIN_PASSWORD": password, "BERTH_AUTH__AUTO_CREATE_PROJECTS": "true"})
    try:
        admin = Admin(reg.url, (ADMIN_USER, password))
        owner, outsider = ("owner", new_secret()), ("outsider", new_secret())
        for name, secret in (owner, outsider):
            admin.create_user(name, secret)
        status = b"Package: hello\nStatus: install ok installed\nVersion: 2.10-3\nArchitecture: amd64\n\n"
        image = Image(layer_tars=[random_tar({"var/lib/dpkg/status": status})])
        client = Client(reg.url, basic=owner)
        repo = "private/hello"
        for blob in (image.config, *image.layers):
            assert push_blob(client, repo, blob.data).status_code == 201
        r = client.put(f"/v2/{repo}/manifests/1", data=image.manifest.data, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, f"{r.status_code} {r.text[:300]}"

        inv = InventoryAPI(reg.url, owner).inventory(repo, image.manifest.digest)
        assert [(p["ecosystem"], p["name"], p["version"]) for p in inv["packages"]] == [("deb", "hello", "2.10-3")]
        for creds, expected in ((outsider, 403), (None, 401)):
            for what in ("inventory", "sbom"):
                r = InventoryAPI(reg.url, creds).get(repo, image.manifest.digest, what)
                assert r.status_code == expected, f"{what} as {creds and creds[0]}: {r.status_code} {r.text[:300]}"
    finally:
        stop_berth(reg)
