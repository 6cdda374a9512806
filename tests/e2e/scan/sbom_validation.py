"""Validation of SBOM documents by the reference libraries of each format.

- `validate_spdx(doc)`: spdx-tools parses the SPDX 2.x JSON document into its model (which
  checks every field's type and form) and then runs its validator over the whole document
  (SPDX ids, relationships that point at existing elements, licence expressions against the
  SPDX licence list, purl locators, checksums, the namespace URI, the creation time).
- `validate_cyclonedx(doc)`: cyclonedx-python-lib validates the JSON document against the
  strict CycloneDX schema of its `specVersion` (no unknown properties), formats included.

Both raise AssertionError listing every problem found, so a test failure shows them all.
The pinned versions are in requirements.txt beside this file.

Run as a script to validate files: `python sbom_validation.py PATH...`, where a directory
stands for its `*.spdx.json` and `*.cdx.json` files (what `BERTH_SBOM_OUT` collects from
`cargo test -p berth-scan --test sbom`).
"""

import copy
import json
import sys
from pathlib import Path

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.error import SPDXParsingError
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

_CYCLONEDX_VERSIONS = {
    "1.4": SchemaVersion.V1_4,
    "1.5": SchemaVersion.V1_5,
    "1.6": SchemaVersion.V1_6,
}


def validate_spdx(doc: dict) -> None:
    """Raise AssertionError unless `doc` is a valid SPDX 2.2/2.3 JSON document."""
    # The parser may alter what it is given; the caller's dict stays as it was.
    try:
        document = JsonLikeDictParser().parse(copy.deepcopy(doc))
    except SPDXParsingError as e:
        raise AssertionError(
            "SPDX document does not parse:\n" + "\n".join(f"  - {m}" for m in e.get_messages())
        ) from None
    messages = validate_full_spdx_document(document)
    if messages:
        lines = []
        for m in messages:
            # The element the message is about, or the one holding it (a licence, a reference).
            kind = m.context.element_type.name if m.context.element_type else "?"
            where = m.context.spdx_id or m.context.parent_id or "(document)"
            lines.append(f"  - {where} [{kind}]: {m.validation_message}")
        raise AssertionError(f"SPDX document is not valid ({len(messages)} problems):\n" + "\n".join(lines))


def validate_cyclonedx(doc: dict) -> None:
    """Raise AssertionError unless `doc` is valid against the strict CycloneDX JSON schema of
    its specVersion."""
    spec = doc.get("specVersion")
    version = _CYCLONEDX_VERSIONS.get(spec)
    if version is None:
        raise AssertionError(f"unsupported CycloneDX specVersion {spec!r} (known: {sorted(_CYCLONEDX_VERSIONS)})")
    errors = JsonStrictValidator(version).validate_str(json.dumps(doc), all_errors=True)
    errors = list(errors or [])
    if errors:
        lines = []
        for e in errors:
            data = e.data
            path = "/".join(str(p) for p in getattr(data, "absolute_path", [])) or "(document)"
            lines.append(f"  - {path}: {getattr(data, 'message', data)}")
        raise AssertionError(
            f"CycloneDX {spec} document is not valid ({len(errors)} problems):\n" + "\n".join(lines)
        )


def _validate_file(path: Path) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    if "spdxVersion" in doc:
        validate_spdx(doc)
    elif doc.get("bomFormat") == "CycloneDX":
        validate_cyclonedx(doc)
    else:
        raise AssertionError("neither an SPDX nor a CycloneDX JSON document")


def main(argv: list[str]) -> int:
    files: list[Path] = []
    for arg in argv:
        p = Path(arg)
        if p.is_dir():
            files += sorted(p.glob("*.spdx.json")) + sorted(p.glob("*.cdx.json"))
        else:
            files.append(p)
    if not files:
        print("no documents given", file=sys.stderr)
        return 2
    failed = 0
    for f in files:
        try:
            _validate_file(f)
        except AssertionError as e:
            failed += 1
            print(f"FAIL {f}\n{e}")
        else:
            print(f"ok   {f}")
    print(f"{len(files) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
