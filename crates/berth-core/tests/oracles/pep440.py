"""Oracle for the Pep440 scheme (tests/version_oracles.rs).

Reads lines "V <hex>" and "C <hex a> <hex b>" (versions as hex of their UTF-8 bytes) on
stdin and prints one answer per line: ok|err, or lt|eq|gt|err, as packaging.version.Version
decides. Python refuses numbers of more than 4300 digits with a ValueError: that is an error
too.
"""

import sys

from packaging.version import InvalidVersion, Version


def parse(hex_text):
    try:
        return Version(bytes.fromhex(hex_text).decode("utf-8"))
    except (InvalidVersion, ValueError):
        return None


answers = []
for line in sys.stdin:
    fields = line.split()
    if not fields:
        continue
    if fields[0] == "V":
        answers.append("ok" if parse(fields[1]) is not None else "err")
    else:
        a, b = parse(fields[1]), parse(fields[2])
        if a is None or b is None:
            answers.append("err")
        else:
            answers.append("lt" if a < b else "gt" if a > b else "eq")
sys.stdout.write("".join(answer + "\n" for answer in answers))
