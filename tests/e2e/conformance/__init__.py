"""OCI Distribution Spec v1.1 conformance suite, ported from opencontainers/distribution-spec."""
