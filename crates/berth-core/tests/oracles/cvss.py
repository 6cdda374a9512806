"""Oracle for crates/berth-core/tests/cvss.rs: scores CVSS vectors with PyPI's `cvss` package.

Reads one vector per line on stdin, in one process for the whole batch. Writes a first line
"cvss <package version>", then one line per input vector, in order:
"<score>\t<severity>" (score with one decimal; for v3.x the base score, for v4.0 the score of
all metrics present), or "error\t<message>" for a vector the package rejects.
"""

import os
import sys

# This file is named cvss.py, and Python puts the script's directory first on sys.path, where
# this file would shadow the package it means to import.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

try:
    from importlib.metadata import version

    from cvss import CVSS3, CVSS4
except ImportError as err:
    sys.stderr.write("PyPI package `cvss` is not importable by %s: %s\n" % (sys.executable, err))
    sys.exit(3)


def rate(vector):
    if vector.startswith("CVSS:4.0/"):
        c = CVSS4(vector)
        return c.base_score, c.severity
    if vector.startswith("CVSS:3."):
        c = CVSS3(vector)
        return c.scores()[0], c.severities()[0]
    raise ValueError("not a v3 or v4 vector")


def main():
    out = sys.stdout
    out.write("cvss %s\n" % version("cvss"))
    for line in sys.stdin:
        vector = line.rstrip("\n")
        try:
            score, severity = rate(vector)
            out.write("%.1f\t%s\n" % (float(score), severity.lower()))
        except Exception as err:  # any rejection is an answer to compare
            out.write("error\t%s\n" % str(err).replace("\n", " "))
    out.flush()


if __name__ == "__main__":
    main()
