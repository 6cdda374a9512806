"""The request log as an operator reads it (issue 15): one line per request with the query
string (secrets removed), the caller, bytes in and out, and a duration with a sane number of
digits. Read from berth's JSON log (`log.format = "json"`)."""

import json
import secrets
import time
from urllib.parse import unquote

import requests

from conftest import start_berth, stop_berth


def request_lines(reg) -> list[dict]:
    out = []
    for line in reg.log_path.read_text(errors="replace").splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("message") in ("request", "request failed"):
            out.append(e)
    return out


def find(reg, pred, timeout=10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        for e in request_lines(reg):
            if pred(e):
                return e
        assert time.monotonic() < deadline, "\n".join(json.dumps(e) for e in request_lines(reg)[-20:])
        time.sleep(0.1)


def field(e: dict, name: str):
    return e.get(name, (e.get("span") or {}).get(name))


def test_request_lines_carry_query_caller_bytes_and_duration(tmp_path):
    password = secrets.token_urlsafe(18)
    reg = start_berth(tmp_path, env={"BERTH_ADMIN_PASSWORD": password, "BERTH_LOG__FORMAT": "json"})
    try:
        auth = ("admin", password)
        data = b"x" * 1234
        import hashlib
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = requests.post(f"{reg.url}/v2/logs/app/blobs/uploads/", params={"digest": digest}, data=data, auth=auth)
        assert r.status_code == 201, r.text
        r = requests.get(f"{reg.url}/v2/logs/app/blobs/{digest}", auth=auth)
        assert r.status_code == 200
        r = requests.get(f"{reg.url}/v2/logs/app/tags/list", params={"n": "5", "last": "a"}, auth=auth)
        # A token request carries a password in its form or a refresh token in its query.
        requests.get(f"{reg.url}/auth/token", params={"service": "berth", "refresh_token": "s3cr3t-value"})

        push = find(reg, lambda e: field(e, "method") == "POST" and "/blobs/uploads/" in (field(e, "path") or ""))
        assert field(push, "caller") == "admin", push
        assert int(field(push, "bytes_in")) == 1234, push
        # The query is logged as it was sent (percent-encoded).
        assert f"digest={digest}" in unquote(field(push, "query") or ""), push

        pull = find(reg, lambda e: field(e, "method") == "GET" and digest in (field(e, "path") or ""))
        assert int(field(pull, "bytes_out")) == 1234, pull
        ms = field(pull, "ms")
        assert isinstance(ms, (int, float)), pull
        decimals = str(ms).split(".")[1] if "." in str(ms) else ""
        assert len(decimals) <= 2, f"duration with {len(decimals)} decimals: {ms}"

        tags = find(reg, lambda e: (field(e, "path") or "").endswith("/tags/list"))
        assert field(tags, "query") == "n=5&last=a", tags

        token = find(reg, lambda e: field(e, "path") == "/auth/token")
        assert "s3cr3t-value" not in json.dumps(token), token
        assert "refresh_token=" in (field(token, "query") or ""), token
        assert "s3cr3t-value" not in reg.log_path.read_text(errors="replace")
    finally:
        stop_berth(reg)
