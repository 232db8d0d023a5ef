"""The Hub imitation answers the real huggingface_hub client the way the Hub does (DESIGN.md 5)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
)

from app.core import gguf_header
from tests.hub_fixtures import GATED_REPO, TINY_REPO


def _api(hub) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=False)


def test_search_filters_gguf_and_sorts_by_downloads(hub):
    found = [m.id for m in _api(hub).list_models(search="GGUF", filter="gguf", sort="downloads")]
    assert found == [TINY_REPO, GATED_REPO]
    assert [m.id for m in _api(hub).list_models(filter="gguf", limit=1)] == [TINY_REPO]
    everything = [m.id for m in _api(hub).list_models()]
    assert "other-org/notes" in everything


def test_search_paginates_with_link_header(hub):
    hub.page_size = 1
    found = [m.id for m in _api(hub).list_models(sort="downloads")]
    assert found == ["other-org/notes", TINY_REPO, GATED_REPO]
    assert sum(1 for m, p, _ in hub.requests if p == "/api/models") == 3


def test_model_info_and_tree_carry_lfs_sha256(hub, hub_repos):
    info = _api(hub).model_info(TINY_REPO, files_metadata=True)
    assert info.sha == hub.commit(TINY_REPO) and len(info.sha) == 40
    by_name = {s.rfilename: s for s in info.siblings}
    path = hub_repos[TINY_REPO]["quantdesk-test-Q4_K_M.gguf"]
    sib = by_name["quantdesk-test-Q4_K_M.gguf"]
    assert sib.size == path.stat().st_size
    assert sib.lfs.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    tree = list(_api(hub).list_repo_tree(TINY_REPO, recursive=True))
    shards = [f.path for f in tree if "-of-00003" in f.path]
    assert len(shards) == 3
    assert {f.path: f.lfs.sha256 for f in tree if f.lfs}[sib.rfilename] == sib.lfs.sha256


def test_head_metadata_and_range_get(hub, hub_repos):
    url = hf_hub_url(TINY_REPO, "quantdesk-test-Q8_0.gguf", endpoint=hub.endpoint)
    meta = get_hf_file_metadata(url, token=False)
    data = hub_repos[TINY_REPO]["quantdesk-test-Q8_0.gguf"].read_bytes()
    assert meta.commit_hash == hub.commit(TINY_REPO)
    assert meta.etag == hashlib.sha256(data).hexdigest()
    assert meta.size == len(data)
    r = httpx2.get(url, headers={"Range": "bytes=100-"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    assert r.content == data[100:]
    assert hub.served(TINY_REPO, "quantdesk-test-Q8_0.gguf") == len(data) - 100
    # the header reader's own Range path works against it too
    spec = gguf_header.read_url(url)
    assert spec.quant == "Q8_0"


def test_hf_hub_download_gets_the_exact_bytes(hub, hub_repos, tmp_path):
    path = hf_hub_download(
        TINY_REPO, "quantdesk-test-Q2_K.gguf", endpoint=hub.endpoint, cache_dir=tmp_path
    )
    assert Path(path).read_bytes() == hub_repos[TINY_REPO]["quantdesk-test-Q2_K.gguf"].read_bytes()


def test_errors_carry_hub_error_codes(hub):
    api = _api(hub)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("nobody/nothing")
    url = hf_hub_url(TINY_REPO, "missing.gguf", endpoint=hub.endpoint)
    with pytest.raises(EntryNotFoundError):
        get_hf_file_metadata(url, token=False)
    gated = hf_hub_url(GATED_REPO, "gated-Q4_K_M.gguf", endpoint=hub.endpoint)
    with pytest.raises(GatedRepoError):
        get_hf_file_metadata(gated, token=False)
    assert get_hf_file_metadata(gated, token=hub.token).size > 0
    hub.fail(503, times=1, match="/api/models/")
    with pytest.raises(HfHubHTTPError) as info:
        api.model_info(TINY_REPO)
    assert info.value.response.status_code == 503
    assert api.model_info(TINY_REPO).id == TINY_REPO  # the fault was used up


def test_faults_drop_and_flip(hub, hub_repos):
    name = "quantdesk-test-Q4_K_M.gguf"
    url = hf_hub_url(TINY_REPO, name, endpoint=hub.endpoint)
    data = hub_repos[TINY_REPO][name].read_bytes()
    hub.drop_after(name, 100_000)
    with pytest.raises(httpx2.HTTPError):
        httpx2.get(url)
    assert hub.served(TINY_REPO, name) == 100_000
    hub.flip_byte(name, 5)
    body = httpx2.get(url).content
    assert len(body) == len(data) and body != data
    assert body[5] == data[5] ^ 0xFF and body[6:] == data[6:]
    assert hub.file_requests(name) == [None, None]


def test_environment_points_at_the_imitation(hub):
    assert os.environ["HF_ENDPOINT"] == hub.endpoint


def test_redirect_mode_answers_302_with_linked_headers(hub, hub_repos, tmp_path):
    hub.redirect = True
    name = "quantdesk-test-Q4_K_M.gguf"
    url = hf_hub_url(TINY_REPO, name, endpoint=hub.endpoint)
    head = httpx2.head(url)
    assert head.status_code == 302 and "/cdn/" in head.headers["Location"]
    meta = get_hf_file_metadata(url, token=False)
    assert meta.commit_hash == hub.commit(TINY_REPO) and meta.etag == hub.sha256(TINY_REPO, name)
    path = hf_hub_download(TINY_REPO, name, endpoint=hub.endpoint, cache_dir=tmp_path)
    assert Path(path).read_bytes() == hub_repos[TINY_REPO][name].read_bytes()
    r = httpx2.get(url, headers={"Range": "bytes=10-"}, follow_redirects=True)
    assert r.status_code == 206 and r.content == hub_repos[TINY_REPO][name].read_bytes()[10:]


def test_range_can_be_ignored(hub, hub_repos):
    hub.honor_range = False
    name = "quantdesk-test-Q2_K.gguf"
    r = httpx2.get(
        hf_hub_url(TINY_REPO, name, endpoint=hub.endpoint), headers={"Range": "bytes=10-"}
    )
    assert r.status_code == 200 and r.content == hub_repos[TINY_REPO][name].read_bytes()


def test_the_cdn_records_tokens_that_reach_it(hub):
    hub.redirect = True
    url = hf_hub_url(GATED_REPO, "gated-Q4_K_M.gguf", endpoint=hub.endpoint)
    location = httpx2.head(url, headers={"Authorization": f"Bearer {hub.token}"}).headers[
        "Location"
    ]
    assert location.startswith(hub.cdn_endpoint) and hub.cdn_endpoint != hub.endpoint
    httpx2.head(location, headers={"Authorization": "Bearer leaked"})
    assert hub.auth_at_cdn == ["Bearer leaked"]
