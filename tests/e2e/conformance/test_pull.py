"""Pull workflow of the OCI Distribution Spec v1.1 conformance suite.

Port of conformance/01_pull_test.go of opencontainers/distribution-spec at commit
47008ca930b575b3f1cd422414c00d3b0752a7cb (Ginkgo v2 suite, spec v1.1; data from setup.go at
b5f09ebe541c65857e8721d51a7a3d0e2f1d8749). One test per upstream spec, in upstream order; the
docstring of each test is the upstream spec text ("Context / Specify"). Teardown follows the
upstream default OCI_DELETE_MANIFEST_BEFORE_BLOBS=1 (manifests are deleted before blobs).
"""

import pytest

from .conformance_support import (
    ERROR_CODES,
    INVALID_MANIFEST_CONTENT,
    MT_MANIFEST,
    MT_OCTET,
    NONEXISTENT_MANIFEST,
    TEST_TAG_NAME,
    error_codes_of,
    expect_2xx,
    expect_status,
    relative_location,
)


def _push_blob(client, repo, content: bytes, digest: str, length: str):
    resp = repo("POST", "blobs/uploads/")
    return client.put(
        relative_location(resp),
        params={"digest": digest},
        headers={"Content-Type": MT_OCTET, "Content-Length": length},
        data=content,
    )


# --- Setup ---------------------------------------------------------------------------------


def test_setup_populate_registry_with_test_blob_config0(client, repo, data):
    """Setup / Populate registry with test blob (configs[0])"""
    expect_2xx(_push_blob(client, repo, data.configs[0].content, data.configs[0].digest, data.configs[0].length))


def test_setup_populate_registry_with_test_blob_config1(client, repo, data):
    """Setup / Populate registry with test blob (configs[1])"""
    expect_2xx(_push_blob(client, repo, data.configs[1].content, data.configs[1].digest, data.configs[1].length))


def test_setup_populate_registry_with_test_layer(client, repo, data):
    """Setup / Populate registry with test layer"""
    expect_2xx(_push_blob(client, repo, data.layer_blob_data, data.layer_blob_digest, data.layer_blob_content_length))


def test_setup_populate_registry_with_test_manifest_tag(repo, data, state):
    """Setup / Populate registry with test manifest (manifests[0] by tag)"""
    state.tag = TEST_TAG_NAME
    resp = repo("PUT", f"manifests/{state.tag}", headers={"Content-Type": MT_MANIFEST}, data=data.manifests[0].content)
    expect_2xx(resp)


def test_setup_populate_registry_with_test_manifest_digest(repo, data):
    """Setup / Populate registry with test manifest (manifests[1] by digest)"""
    resp = repo("PUT", f"manifests/{data.manifests[1].digest}", headers={"Content-Type": MT_MANIFEST},
                data=data.manifests[1].content)
    expect_2xx(resp)


def test_setup_get_tag_name_from_environment():
    """Setup / Get tag name from environment

    Upstream runs this only when OCI_TAG_NAME, OCI_MANIFEST_DIGEST and OCI_BLOB_DIGEST point at
    content already in the registry (RunOnlyIfNot(runPullSetup)); this port always pushes its
    own content, so, as upstream with setup enabled, the spec is skipped.
    """
    pytest.skip("upstream skips this spec whenever the pull setup runs (it always runs here)")


# --- Pull blobs ----------------------------------------------------------------------------


def test_pull_blobs_head_nonexistent_blob_404(repo, data):
    """Pull blobs / HEAD request to nonexistent blob should result in 404 response"""
    expect_status(repo("HEAD", f"blobs/{data.dummy_digest}"), 404)


def test_pull_blobs_head_existing_blob_200(repo, data):
    """Pull blobs / HEAD request to existing blob should yield 200"""
    resp = repo("HEAD", f"blobs/{data.configs[0].digest}")
    expect_status(resp, 200)
    if h := resp.headers.get("Docker-Content-Digest"):
        assert h == data.configs[0].digest


def test_pull_blobs_get_nonexistent_blob_404(repo, data):
    """Pull blobs / GET nonexistent blob should result in 404 response"""
    expect_status(repo("GET", f"blobs/{data.dummy_digest}"), 404)


def test_pull_blobs_get_existing_blob_200(repo, data):
    """Pull blobs / GET request to existing blob URL should yield 200"""
    expect_status(repo("GET", f"blobs/{data.configs[0].digest}"), 200)


# --- Pull manifests ------------------------------------------------------------------------


def test_pull_manifests_head_nonexistent_manifest_404(repo):
    """Pull manifests / HEAD request to nonexistent manifest should return 404"""
    expect_status(repo("HEAD", f"manifests/{NONEXISTENT_MANIFEST}"), 404)


def test_pull_manifests_head_manifest0_by_digest_200(repo, data):
    """Pull manifests / HEAD request to manifest[0] path (digest) should yield 200 response"""
    resp = repo("HEAD", f"manifests/{data.manifests[0].digest}", headers={"Accept": MT_MANIFEST})
    expect_status(resp, 200)
    if h := resp.headers.get("Docker-Content-Digest"):
        assert h == data.manifests[0].digest


def test_pull_manifests_head_manifest1_by_digest_200(repo, data):
    """Pull manifests / HEAD request to manifest[1] path (digest) should yield 200 response"""
    resp = repo("HEAD", f"manifests/{data.manifests[1].digest}", headers={"Accept": MT_MANIFEST})
    expect_status(resp, 200)
    if h := resp.headers.get("Docker-Content-Digest"):
        assert h == data.manifests[1].digest


def test_pull_manifests_head_manifest_by_tag_200(repo, data, state):
    """Pull manifests / HEAD request to manifest path (tag) should yield 200 response"""
    tag = getattr(state, "tag", "")
    assert tag, "tag is empty (setup did not run)"
    resp = repo("HEAD", f"manifests/{tag}", headers={"Accept": MT_MANIFEST})
    expect_status(resp, 200)
    if h := resp.headers.get("Docker-Content-Digest"):
        assert h == data.manifests[0].digest


def test_pull_manifests_get_nonexistent_manifest_404(repo):
    """Pull manifests / GET nonexistent manifest should return 404"""
    expect_status(repo("GET", f"manifests/{NONEXISTENT_MANIFEST}"), 404)


def test_pull_manifests_get_manifest0_by_digest_200(repo, data):
    """Pull manifests / GET request to manifest[0] path (digest) should yield 200 response"""
    resp = repo("GET", f"manifests/{data.manifests[0].digest}", headers={"Accept": MT_MANIFEST})
    expect_status(resp, 200)


def test_pull_manifests_get_manifest1_by_digest_200(repo, data):
    """Pull manifests / GET request to manifest[1] path (digest) should yield 200 response"""
    resp = repo("GET", f"manifests/{data.manifests[1].digest}", headers={"Accept": MT_MANIFEST})
    expect_status(resp, 200)


def test_pull_manifests_get_manifest_by_tag_200(repo, state):
    """Pull manifests / GET request to manifest path (tag) should yield 200 response"""
    tag = getattr(state, "tag", "")
    assert tag, "tag is empty (setup did not run)"
    expect_status(repo("GET", f"manifests/{tag}", headers={"Accept": MT_MANIFEST}), 200)


# --- Error codes ---------------------------------------------------------------------------


def test_error_codes_400_body_is_oci_error_json(repo):
    """Error codes / 400 response body should contain OCI-conforming JSON message"""
    resp = repo("GET", "manifests/sha256:totallywrong", headers={"Content-Type": MT_MANIFEST},
                data=INVALID_MANIFEST_CONTENT)
    expect_status(resp, 400, 404)
    if resp.status_code == 400:
        codes = error_codes_of(resp)
        assert codes, f"empty errors array: {resp.text!r}"
        assert codes[0] in ERROR_CODES, f"unknown error code {codes[0]!r}"


# --- Teardown ------------------------------------------------------------------------------


def test_teardown_delete_manifest0(repo, data):
    """Teardown / Delete manifest[0] created in setup"""
    expect_2xx(repo("DELETE", f"manifests/{data.manifests[0].digest}"), 405)


def test_teardown_delete_manifest1(repo, data):
    """Teardown / Delete manifest[1] created in setup"""
    expect_2xx(repo("DELETE", f"manifests/{data.manifests[1].digest}"), 405)


def test_teardown_delete_config0_blob(repo, data):
    """Teardown / Delete config[0] blob created in setup"""
    expect_2xx(repo("DELETE", f"blobs/{data.configs[0].digest}"), 404, 405)


def test_teardown_delete_config1_blob(repo, data):
    """Teardown / Delete config[1] blob created in setup"""
    expect_2xx(repo("DELETE", f"blobs/{data.configs[1].digest}"), 404, 405)


def test_teardown_delete_layer_blob(repo, data):
    """Teardown / Delete layer blob created in setup"""
    expect_2xx(repo("DELETE", f"blobs/{data.layer_blob_digest}"), 404, 405)
