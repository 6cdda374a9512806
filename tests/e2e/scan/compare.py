"""Berth's inventory against syft's catalogue of the same image, package type by package type.

Only the types both read are compared, each as a set of (name, version):

    syft `type`   Berth `ecosystem`
    deb           deb
    python        pypi     (names compared after PEP 503 normalisation)
    npm           npm
    go-module     golang   (syft writes the Go toolchain `stdlib` as `go1.x.y`, Berth `1.x.y`)

A difference is every name that is on one side and not the other, or on both with other
versions. Each must be a row (type, name, reason) of known_differences.csv, and each row must
match a difference of this run: a row nothing needs any more fails too, so the file cannot go
stale. `type` there is Berth's ecosystem.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

KNOWN_DIFFERENCES = Path(__file__).resolve().parent / "known_differences.csv"
# syft's package type -> Berth's ecosystem, for the types both catalogue.
SYFT_TYPES = {"deb": "deb", "python": "pypi", "npm": "npm", "go-module": "golang"}


def pep503(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _key(ecosystem: str, name: str, version: str) -> tuple[str, str]:
    if ecosystem == "pypi":
        name = pep503(name)
    return name, version


# (ecosystem, name, version) -> the files it was read from, for the failure message.
Paths = dict[tuple[str, str, str], set[str]]


def syft_packages(report: dict, paths: Paths | None = None) -> dict[str, set[tuple[str, str]]]:
    """syft's JSON document as {ecosystem: {(name, version)}} for the compared types."""
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for artifact in report["artifacts"]:
        ecosystem = SYFT_TYPES.get(artifact["type"])
        if ecosystem is None:
            continue
        version = artifact["version"]
        if ecosystem == "golang" and artifact["name"] == "stdlib":
            version = version.removeprefix("go")
        key = _key(ecosystem, artifact["name"], version)
        out[ecosystem].add(key)
        if paths is not None:
            paths.setdefault((ecosystem, *key), set()).update(
                loc["path"].lstrip("/") for loc in artifact.get("locations", [])
            )
    return out


def berth_packages(packages: list[dict], paths: Paths | None = None) -> dict[str, set[tuple[str, str]]]:
    """Berth's inventory `packages` as {ecosystem: {(name, version)}} for the compared types."""
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for p in packages:
        if p["ecosystem"] in SYFT_TYPES.values():
            key = _key(p["ecosystem"], p["name"], p["version"])
            out[p["ecosystem"]].add(key)
            if paths is not None:
                paths.setdefault((p["ecosystem"], *key), set()).add(f"{p['path']} (layer {p['layer']})")
    return out


@dataclass(frozen=True)
class KnownDifference:
    type: str
    name: str
    reason: str


def known_differences(path: Path = KNOWN_DIFFERENCES) -> list[KnownDifference]:
    """The committed rows (lines starting with `#` are comments)."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    rows = []
    for row in csv.DictReader(lines):
        where = f"{path.name}: {row}"
        assert set(row) == {"type", "name", "reason"}, f"{where}: the columns are type,name,reason"
        assert row["type"] in SYFT_TYPES.values(), f"{where}: unknown type {row['type']!r}"
        assert row["name"] and (row["reason"] or "").strip(), f"{where}: a row needs a name and a reason"
        name = pep503(row["name"]) if row["type"] == "pypi" else row["name"]
        assert all((r.type, r.name) != (row["type"], name) for r in rows), f"{where}: listed twice"
        rows.append(KnownDifference(row["type"], name, row["reason"].strip()))
    return rows


@dataclass
class Difference:
    """One name whose versions differ between the two (an empty set: not listed at all)."""

    type: str
    name: str
    syft: set[str] = field(default_factory=set)
    berth: set[str] = field(default_factory=set)
    syft_paths: set[str] = field(default_factory=set)
    berth_paths: set[str] = field(default_factory=set)

    def __str__(self) -> str:
        return (
            f"{self.type} {self.name}: syft {sorted(self.syft) or 'nothing'} {sorted(self.syft_paths)}, "
            f"berth {sorted(self.berth) or 'nothing'} {sorted(self.berth_paths)}"
        )


@dataclass
class Comparison:
    counts: dict[str, tuple[int, int]]  # ecosystem -> (syft, berth) numbers of (name, version)
    explained: list[tuple[Difference, KnownDifference]]
    unexplained: list[Difference]
    unused_rows: list[KnownDifference]

    def report(self) -> str:
        lines = [f"{t}: syft {s}, berth {b}" for t, (s, b) in sorted(self.counts.items())]
        lines += [f"known: {d} ({row.reason})" for d, row in self.explained]
        lines += [f"UNEXPLAINED: {d}" for d in self.unexplained]
        lines += [f"UNUSED ROW of {KNOWN_DIFFERENCES.name}: {r.type},{r.name}" for r in self.unused_rows]
        return "\n".join(lines)


def compare(syft_report: dict, packages: list[dict], rows: list[KnownDifference]) -> Comparison:
    syft_paths: Paths = {}
    berth_paths: Paths = {}
    syft, berth = syft_packages(syft_report, syft_paths), berth_packages(packages, berth_paths)
    differences: list[Difference] = []
    for ecosystem in sorted(set(SYFT_TYPES.values())):
        by_name: dict[str, Difference] = {}
        for side, entries in (("syft", syft[ecosystem] - berth[ecosystem]), ("berth", berth[ecosystem] - syft[ecosystem])):
            for name, version in entries:
                d = by_name.setdefault(name, Difference(ecosystem, name))
                getattr(d, side).add(version)
        for d in by_name.values():
            # Versions both list are not part of the difference, but show what each has.
            d.syft |= {v for n, v in syft[ecosystem] if n == d.name}
            d.berth |= {v for n, v in berth[ecosystem] if n == d.name}
            for v in d.syft:
                d.syft_paths |= syft_paths[(ecosystem, d.name, v)]
            for v in d.berth:
                d.berth_paths |= berth_paths[(ecosystem, d.name, v)]
        differences += sorted(by_name.values(), key=lambda d: d.name)
    rows_by_key = {(r.type, r.name): r for r in rows}
    explained = [(d, rows_by_key[(d.type, d.name)]) for d in differences if (d.type, d.name) in rows_by_key]
    used = {(d.type, d.name) for d, _ in explained}
    return Comparison(
        counts={t: (len(syft[t]), len(berth[t])) for t in sorted(set(SYFT_TYPES.values()))},
        explained=explained,
        unexplained=[d for d in differences if (d.type, d.name) not in rows_by_key],
        unused_rows=[r for r in rows if (r.type, r.name) not in used],
    )
