"""Hub catalog against the imitation: search, variants with shards, clear errors, offline."""

from __future__ import annotations

import hashlib
import json
import socket

import pytest

from app.cli import run_cli
from app.core import hub as hubapi
from app.core.hub import HubError, OfflineError
from tests.hub_fixtures import GATED_REPO, TINY_REPO


def test_search_lists_gguf_repos_by_downloads(hub):
    hits = hubapi.search("GGUF")
    assert [h.repo_id for h in hits] == [TINY_REPO, GATED_REPO]  # other-org/notes has no GGUF
    assert hits[0].downloads == 50_000 and hits[1].gated
    assert [h.repo_id for h in hubapi.search("tiny")] == [TINY_REPO]
    assert hubapi.search("no-such-thing") == []


def test_variants_carry_size_sha256_and_group_the_shards(hub, hub_repos):
    files = hub_repos[TINY_REPO]
    variants = {v.quant: v for v in hubapi.list_variants(TINY_REPO)}
    assert sorted(variants) == ["F16", "Q2_K", "Q4_K_M", "Q8_0"]
    f16 = variants["F16"]
    assert f16.shards == 3 and f16.file == "quantdesk-test-F16-00001-of-00003.gguf"
    assert f16.size_bytes == sum(p.stat().st_size for n, p in files.items() if "F16" in n)
    q4 = variants["Q4_K_M"]
    data = files["quantdesk-test-Q4_K_M.gguf"].read_bytes()
    assert q4.files[0].sha256 == hashlib.sha256(data).hexdigest()
    assert q4.size_bytes == len(data)
    assert q4.commit == hub.commit(TINY_REPO)
    assert not q4.quant_confirmed  # the header confirms it after download


def test_cli_search_and_variants_json(hub, capsys):
    assert run_cli(["search", "tiny", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"repo": TINY_REPO, "downloads": 50_000, "likes": 500, "gated": False}
    ]
    assert run_cli(["variants", TINY_REPO, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    f16 = next(r for r in records if r["quant"] == "F16")
    assert f16["shards"] == 3 and len(f16["sha256"]) == 3
    q8 = next(r for r in records if r["quant"] == "Q8_0")
    assert q8["file"] == "quantdesk-test-Q8_0.gguf"
    assert q8["sha256"] == hub.sha256(TINY_REPO, "quantdesk-test-Q8_0.gguf")
    assert q8["size_bytes"] > 0 and q8["shards"] == 1


def test_missing_repo_is_a_clear_error(hub, capsys):
    with pytest.raises(HubError, match="nobody/nothing does not exist") as info:
        hubapi.list_variants("nobody/nothing")
    assert info.value.kind == "not_found"
    assert run_cli(["variants", "nobody/nothing"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_server_error_is_a_clear_error(hub):
    hub.fail(502, times=1, match="/api/models/")
    with pytest.raises(HubError, match="502 .*try again later") as info:
        hubapi.list_variants(TINY_REPO)
    assert info.value.kind == "server"


def test_gated_repo_metadata_is_public_but_its_files_need_the_token(hub):
    assert hubapi.list_variants(GATED_REPO)[0].quant == "Q4_K_M"
    hub.fail(401, times=1, match="/api/models/", error_code="GatedRepo")
    with pytest.raises(HubError, match="is gated: accept its terms") as info:
        hubapi.list_variants(GATED_REPO)
    assert info.value.kind == "gated"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_hub_is_offline_and_search_falls_back_to_the_catalog(monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with pytest.raises(OfflineError) as info:
        hubapi.search("qwen")
    assert info.value.kind == "offline"
    assert run_cli(["search", "qwen", "--json"]) == 0
    out = capsys.readouterr()
    assert len(json.loads(out.out)) >= 12 and "offline" in out.err


def test_offline_mode_refuses_before_any_request(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="offline"):
        hubapi.list_variants(TINY_REPO)
    with pytest.raises(OfflineError):
        hubapi.search("tiny")
    assert hub.requests == []
