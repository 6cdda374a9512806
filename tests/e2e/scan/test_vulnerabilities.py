"""Vulnerabilities of the real image of this suite (a debootstrap'd Debian bookworm with Python,
Node and Go content; see conftest.py): `berth vulndb import` run as an operator runs it, beside
the serving registry, then the API's matches.

The records are the real OSV records of crates/berth-scan/testdata/vulndb/osv (PyPI, npm, Go,
Maven, crates.io, Ubuntu, Debian) and a Debian Security Tracker file written here in the
tracker's own format, naming source packages the image really has (apt, dpkg) at the versions
its dpkg database holds, so that the expected answers are known: none of the real records
names bookworm packages of a minbase system.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import requests

from conftest import ROOT, berth_env

from .conftest import TIMEOUT

RECORDS = ROOT / "crates" / "berth-scan" / "testdata" / "vulndb" / "osv"


def source_versions(dpkg_status) -> dict[str, str]:
    """Source package -> version, from a dpkg status file (a binary without Source: is its
    own source)."""
    out = {}
    for stanza in dpkg_status.read_text().split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                k, v = line.split(":", 1)
                fields[k] = v.strip()
        if "Package" not in fields:
            continue
        source = fields.get("Source", fields["Package"])
        name, _, version = source.partition(" ")
        out[name] = version.strip("()") or fields["Version"]
    return out


def berth(registry, *args) -> dict:
    import os

    binary = os.environ.get("BERTH_BIN", str(ROOT / "target" / "debug" / "berth"))
    proc = subprocess.run(
        [binary, "vulndb", *args, "--data-dir", str(registry.data_dir)],
        env=berth_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"berth vulndb {args[0]}: {proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def test_vulnerabilities_of_real_image(pushed_image, inventory_api, registry, tmp_path):
    if registry.data_dir is None:
        pytest.skip("REGISTRY_URL names an outside registry: berth vulndb needs its data directory")
    repo, digest = pushed_image.repo, pushed_image.digest

    # Before any import: nothing is "free of vulnerabilities", everything is not covered.
    before = inventory_api.get(repo, digest, "vulnerabilities")
    assert before.status_code == 200, before.text[:1000]
    before = before.json()
    assert before["database"] is None
    assert before["complete"] is False
    assert before["findings"] == []
    uncovered = {n["what"]: n for n in before["not_covered"]}
    assert "Debian:12" in uncovered, before["not_covered"]
    assert "no vulnerability database" in uncovered["Debian:12"]["reason"]

    sources = source_versions(pushed_image.built.dpkg_status)
    apt, dpkg = sources["apt"], sources["dpkg"]
    tracker = {
        "apt": {"CVE-2099-0001": {"description": "open, no fix", "releases": {
            "bookworm": {"status": "open", "urgency": "high"}}}},
        "dpkg": {
            "CVE-2099-0002": {"releases": {"bookworm": {
                "status": "resolved", "fixed_version": dpkg, "urgency": "low"}}},
            "CVE-2099-0003": {"releases": {
                "bookworm": {"status": "resolved", "fixed_version": dpkg + "+fix1", "urgency": "medium"},
                "bullseye": {"status": "open", "urgency": "high"}}},
        },
    }
    tracker_path = tmp_path / "debian.json"
    tracker_path.write_text(json.dumps(tracker))

    report = berth(registry, "import", str(RECORDS), str(tracker_path))
    assert report["published"] is True and report["version"] >= 1, report
    assert "debian-tracker" in report["feeds"] and "osv:PyPI" in report["feeds"], report
    assert report["rejected"] == 0, report
    status = berth(registry, "status")
    assert status["version"] == report["version"]
    assert "Debian:12" in status["ecosystems"]
    api_status = requests.get(registry.url + "/api/v1/vulndb", auth=registry.creds, timeout=30)
    assert api_status.status_code == 200, api_status.text
    assert api_status.json()["version"] == report["version"]

    r = inventory_api.get(repo, digest, "vulnerabilities")
    assert r.status_code == 200, r.text[:1000]
    got = r.json()
    assert got["kind"] == "image"
    assert got["database"]["version"] == report["version"]
    assert "Debian:12" not in {n["what"] for n in got["not_covered"]}, got["not_covered"]
    by_id: dict[str, list[dict]] = {}
    for f in got["findings"]:
        by_id.setdefault(f["id"], []).append(f)

    # apt's binaries (apt, libapt-pkg6.0) all come from source apt: open, no fix, Debian says high.
    apt_findings = by_id.get("CVE-2099-0001", [])
    assert {f["package"] for f in apt_findings} >= {"apt"}, apt_findings
    for f in apt_findings:
        assert f["matched"] == {"ecosystem": "Debian:12", "name": "apt", "version": apt}
        assert f["status"] == "affected" and "fixed_version" not in f
        assert (f["severity"], f["severity_source"]) == ("high", "debian")
        assert f["layer"] == 0
    # Fixed in the installed version: not affected. Fixed in a later one: fixable, medium.
    assert "CVE-2099-0002" not in by_id
    dpkg_finding = [f for f in by_id["CVE-2099-0003"] if f["package"] == "dpkg"]
    assert len(dpkg_finding) == 1, by_id["CVE-2099-0003"]
    assert dpkg_finding[0]["fixed_version"] == dpkg + "+fix1"
    assert dpkg_finding[0]["status"] == "fixed"
    assert dpkg_finding[0]["severity"] == "medium"
    summary = got["summary"]
    assert summary["total"] == len(got["findings"])
    assert summary["fixable"] == sum(1 for f in got["findings"] if f.get("fixed_version"))

    # Importing the same again changes nothing and publishes nothing.
    again = berth(registry, "import", str(RECORDS), str(tracker_path))
    assert again["published"] is False and again["version"] == report["version"], again
