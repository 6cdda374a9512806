#!/usr/bin/env bash
# Installs everything the full test suite drives: real container clients from Debian, OpenLDAP
# (slapd and ldap-utils, for the LDAP tests, which start their own slapd in a temporary
# directory), the Python test runner with oras in a venv at .venv, and moto (a local S3 for the
# S3 BlobStore tests) in a venv at .venv-s3, schemathesis (the admin API fuzzer of
# tests/e2e/api) in a venv at .venv-schemathesis, and PostgreSQL (the tests start their own
# server with scripts/pg-test-server.sh). Safe to run again; it skips what is present.
set -euo pipefail
cd "$(dirname "$0")/.."

# rpm, maven with a JRE, and ruby: the real version comparisons the orderings of berth-core are
# property-tested against (crates/berth-core/tests/version_oracles.rs; dpkg is always there).
APT_PACKAGES=(skopeo umoci podman containerd docker.io docker-registry runc slapd ldap-utils nginx postgresql python3-fusepy fuse3 e2fsprogs debootstrap rpm maven default-jre-headless ruby)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # slapd: no system directory (its postinst would otherwise ask for a domain and an admin
  # password) and no system service; the LDAP tests run their own slapd in a temporary
  # directory. A policy-rc.d for the time of the install keeps invoke-rc.d from starting slapd
  # (other services start as before); an existing policy-rc.d is left alone.
  echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n[ "$1" = slapd ] && exit 101\nexit 0\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r tests/e2e/requirements.txt
# The SBOM validators of tests/e2e/scan (spdx-tools, cyclonedx-python-lib).
.venv/bin/pip install -q --disable-pip-version-check -r tests/e2e/scan/requirements.txt

# npm's semver, the SemVer oracle of crates/berth-core/tests/version_oracles.rs (node-semver is
# what npm orders versions with). Pinned, so a run compares against the same code as the last.
if [ ! -f .cache/oracles/node_modules/semver/package.json ]; then
  npm install --silent --no-audit --no-fund --prefix .cache/oracles semver@7.8.6 >/dev/null
fi

scripts/s3-test-server.sh --install

# schemathesis in a venv of its own, so that its many dependencies (hypothesis, pytest,
# requests, ...) cannot clash with the pins of tests/e2e/requirements.txt. It has its own list,
# tests/e2e/api/requirements.txt, with every package pinned, so that a CI run generates the same
# requests as the last one (tests/e2e/api runs it derandomized). The test
# runs .venv-schemathesis/bin/st.
if [ ! -x .venv-schemathesis/bin/python ]; then
  python3 -m venv .venv-schemathesis
fi
.venv-schemathesis/bin/pip install -q --disable-pip-version-check -r tests/e2e/api/requirements.txt
