"""Recommendation for a whole repo: variants listed by the Hub client, headers read over Range."""

from __future__ import annotations

import json
import subprocess
import sys

from app.cli.plan import variant_sources
from app.core.fit import GIB
from app.core.gguf_header import read_local
from app.core.recommend import budget_for
from tests import modelfactory
from tests.hub_fixtures import TINY_REPO

VARIANT_KEYS = {"file", "quant", "size_bytes", "verdict", "n_gpu_layers", "ram_bytes", "vram_bytes"}


def test_plan_a_hub_repo_reading_only_headers(hub, planner):
    budget = budget_for(None, ram_bytes=8 * GIB, vram_bytes=0)
    rec = planner.recommend_sources(variant_sources(TINY_REPO), 2048, budget=budget)
    files = {v.file: v for v in rec.variants}
    assert set(files) == {
        "quantdesk-test-Q2_K.gguf",
        "quantdesk-test-Q4_K_M.gguf",
        "quantdesk-test-Q8_0.gguf",
        "quantdesk-test-F16-00001-of-00003.gguf",
    }
    assert all(v.verdict == "cpu" for v in rec.variants)
    f16 = files["quantdesk-test-F16-00001-of-00003.gguf"]
    assert f16.quant == "F16" and f16.offload.plan.weights_bytes > 2_000_000  # all 3 shards
    # Without a GPU, Q8_0/F16 are not worth their speed: the best below ~6.7 bits wins.
    assert rec.recommended is files["quantdesk-test-Q4_K_M.gguf"]
    for name, content in hub.repos[TINY_REPO].files.items():
        if name.endswith(".gguf"):  # every shard's header is read; no file is read whole
            assert 0 < hub.served(TINY_REPO, name) < content.stat().st_size, name
    assert files["quantdesk-test-Q2_K.gguf"].warning


def test_recommend_cli_json(hub, tmp_path):
    for source in (TINY_REPO, str(modelfactory.model_path("Q4_K_M").parent)):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "app",
                "recommend",
                source,
                "--ctx",
                "1024",
                "--json",
                "--ram-budget",
                "4G",
                "--vram-budget",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert data["recommended"] and data["reason"]
        assert len(data["variants"]) >= 4
        for v in data["variants"]:
            assert set(v) >= VARIANT_KEYS


def test_recommend_cli_unknown_repo_and_empty_folder(hub, tmp_path):
    for source in ("nobody/missing-GGUF", str(tmp_path)):
        out = subprocess.run(
            [sys.executable, "-m", "app", "recommend", source],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 1 and "quantdesk: error:" in out.stderr
        assert "Traceback" not in out.stderr


def test_plan_cli_on_a_url_reads_the_header_only(hub):
    name = "quantdesk-test-Q4_K_M.gguf"
    url = f"{hub.endpoint}/{TINY_REPO}/resolve/main/{name}"
    out = subprocess.run(
        [sys.executable, "-m", "app", "plan", url, "--ctx", "1024", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["verdict"] == "cpu" and data["quant"] == "Q4_K_M"
    assert data["weights_bytes"] == read_local(modelfactory.model_path("Q4_K_M")).weights_bytes
    assert hub.served(TINY_REPO, name) < modelfactory.model_path("Q4_K_M").stat().st_size
