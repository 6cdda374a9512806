"""Content Management workflow (tag, manifest and blob deletion) of the OCI Distribution Spec
v1.1 conformance suite.

Port of conformance/04_management_test.go of opencontainers/distribution-spec at commit
3c7a4ac8186fe1307bac6857bfdb48fc190ed57f (Ginkgo v2 suite, spec v1.1; data from setup.go at
b5f09ebe541c65857e8721d51a7a3d0e2f1d8749). One test per upstream spec, in upstream order; the
docstring of each test is the upstream spec text ("Context / Specify"). Upstream has an empty
Teardown context here.
"""

import json

import pytest

from .conformance_support import (
    ERROR_CODES,
    MT_MANIFEST,
    MT_OCTET,
    TEST_TAG_NAME,
    describe,
    error_codes_of,
    expect_2xx,
    expect_status,
    relative_location,
)

UNSUPPORTED = ERROR_CODES[14]


def _push_blob(client, repo, content: bytes, digest: str, length: str):
    resp = repo("POST", "blobs/uploads/")
    return client.put(relative_location(resp), params={"digest": digest},
                      headers={"Content-Length": length, "Content-Type": MT_OCTET}, data=content)


def _tags(resp) -> list:
    """json.Unmarshal into TagList, which must succeed."""
    try:
        body = json.loads(resp.content)
    except ValueError:
        raise AssertionError(f"tags list body is not JSON; {describe(resp)}")
    assert isinstance(body, dict), describe(resp)
    return body.get("tags") or []


# --- Setup ---------------------------------------------------------------------------------


def test_setup_populate_registry_with_test_config_blob(client, repo, data):
    """Setup / Populate registry with test config blob"""
    cfg = data.configs[3]
    expect_2xx(_push_blob(client, repo, cfg.content, cfg.digest, cfg.length))


def test_setup_populate_registry_with_test_layer(client, repo, data):
    """Setup / Populate registry with test layer"""
    expect_2xx(_push_blob(client, repo, data.layer_blob_data, data.layer_blob_digest, data.layer_blob_content_length))


def test_setup_populate_registry_with_test_tag(repo, data, state):
    """Setup / Populate registry with test tag"""
    state.tag_to_delete = TEST_TAG_NAME
    resp = repo("PUT", f"manifests/{state.tag_to_delete}", headers={"Content-Type": MT_MANIFEST},
                data=data.manifests[3].content)
    expect_2xx(resp)


def test_setup_check_how_many_tags_before_deletion(repo, state):
    """Setup / Check how many tags there are before anything gets deleted"""
    resp = repo("GET", "tags/list")
    expect_status(resp, 200)
    state.num_tags = len(_tags(resp))


# --- Manifest delete -----------------------------------------------------------------------


def test_manifest_delete_tag_202_unless_disallowed(repo, state):
    """Manifest delete / DELETE request to manifest tag should return 202, unless tag deletion is disallowed (400/405)"""
    resp = repo("DELETE", f"manifests/{getattr(state, 'tag_to_delete', '')}")
    expect_status(resp, 400, 202, 405)
    if resp.status_code == 400:
        codes = error_codes_of(resp)
        assert codes, f"empty errors array: {resp.text!r}"
        assert codes[0] == UNSUPPORTED, f"400 must carry UNSUPPORTED; {describe(resp)}"


def test_manifest_delete_by_digest_202_unless_already_deleted(repo, data):
    """Manifest delete / DELETE request to manifest (digest) should yield 202 response unless already deleted"""
    resp = repo("DELETE", f"manifests/{data.manifests[3].digest}")
    # if the tag deletion above removed the manifest too, 404 is fine
    expect_status(resp, 202, 404)


def test_manifest_delete_get_deleted_manifest_404_unless_disallowed(repo, data):
    """Manifest delete / GET request to deleted manifest URL should yield 404 response, unless delete is disallowed"""
    expect_status(repo("GET", f"manifests/{data.manifests[3].digest}"), 404, 200)


def test_manifest_delete_tags_list_reflects_deletion(repo, state):
    """Manifest delete / GET request to tags list should reflect manifest deletion"""
    resp = repo("GET", "tags/list")
    expect_status(resp, 200)
    tags = _tags(resp)
    assert len(tags) < getattr(state, "num_tags", 0), f"tags {tags} not fewer than {getattr(state, 'num_tags', 0)}"


# --- Blob delete ---------------------------------------------------------------------------


def test_blob_delete_202(repo, data, state):
    """Blob delete / DELETE request to blob URL should yield 202 response"""
    state.blob_delete_allowed = True
    # config blob
    resp = repo("DELETE", f"blobs/{data.configs[3].digest}")
    expect_status(resp, 202, 404, 405)
    # layer blob
    resp = repo("DELETE", f"blobs/{data.layer_blob_digest}")
    expect_status(resp, 202, 404, 405)
    if resp.status_code == 405:
        state.blob_delete_allowed = False


def test_blob_delete_get_deleted_blob_404(repo, data, state):
    """Blob delete / GET request to deleted blob URL should yield 404 response"""
    if not getattr(state, "blob_delete_allowed", True):
        pytest.skip("runs only when blob deletion is allowed (upstream RunOnlyIf)")
    expect_status(repo("GET", f"blobs/{data.configs[3].digest}"), 404)
