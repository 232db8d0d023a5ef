"""File names from the Hub: quant labels, shard grouping, picking a variant, hostile names."""

from __future__ import annotations

import pytest

from app.core import hub
from app.core.hub import HubError, HubFile
from app.core.library import UnsafeNameError, safe_join


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("Qwen2.5-7B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("llama-2-7b-chat.q8_0.gguf", "Q8_0"),
        ("Meta-Llama-3.1-70B-Instruct-Q8_0-00002-of-00003.gguf", "Q8_0"),
        ("gemma-2-9b-it-IQ4_XS.gguf", "IQ4_XS"),
        ("Phi-3-mini-4k-instruct-fp16.gguf", "F16"),
        ("model-bf16.gguf", "BF16"),
        ("Q4_K_M/model-Q4_K_M-00001-of-00002.gguf", "Q4_K_M"),
        ("DeepSeek-R1-UD-Q2_K_XL.gguf", "Q2_K_XL"),
        ("qwen2-0.5b.gguf", "unknown"),
    ],
)
def test_quant_is_parsed_from_the_file_name(name, quant):
    assert hub.parse_quant(name) == quant


def _files(*names: str) -> list[HubFile]:
    return [HubFile(n, 100 + i, f"{i:064x}") for i, n in enumerate(names)]


def test_shards_group_into_one_variant_and_incomplete_sets_are_left_out():
    files = _files(
        "M-Q8_0-00002-of-00003.gguf",
        "M-Q8_0-00001-of-00003.gguf",
        "M-Q8_0-00003-of-00003.gguf",
        "M-Q4_K_M.gguf",
        "M-Q6_K-00001-of-00002.gguf",  # its second shard is missing
        "mmproj-M-f16.gguf",
        "README.md",
    )
    variants = hub.group_variants("o/M-GGUF", "c" * 40, files)
    assert [(v.quant, v.shards) for v in variants] == [("Q4_K_M", 1), ("Q8_0", 3)]
    q8 = variants[1]
    assert q8.file == "M-Q8_0-00001-of-00003.gguf"
    assert [f.name[-20:] for f in q8.files] == [f"-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert q8.size_bytes == 100 + 101 + 102
    record = q8.as_json()
    assert record["shards"] == 3 and isinstance(record["sha256"], list)
    assert variants[0].as_json()["sha256"] == f"{3:064x}"
    assert not q8.quant_confirmed


def test_pick_variant_by_quant_or_file_name_with_clear_errors():
    variants = hub.group_variants(
        "o/M",
        "c" * 40,
        _files("M-Q4_K_M.gguf", "M-Q8_0-00001-of-00002.gguf", "M-Q8_0-00002-of-00002.gguf"),
    )
    assert hub.pick_variant(variants, "q4_k_m").file == "M-Q4_K_M.gguf"
    assert hub.pick_variant(variants, "M-Q8_0-00002-of-00002.gguf").shards == 2
    with pytest.raises(HubError, match="has no Q2_K variant .*Q4_K_M, Q8_0") as info:
        hub.pick_variant(variants, "Q2_K")
    assert info.value.kind == "not_found"


@pytest.mark.parametrize(
    "name",
    [
        "../../x.gguf",
        "../x.gguf",
        "a/../../x.gguf",
        "/etc/x.gguf",
        "C:\\Windows\\x.gguf",
        "C:x.gguf",
        "..\\..\\x.gguf",
        "sub/./x.gguf",
        "",
        "..",
        "x\x00.gguf",
        "model.gguf:hidden",
        "CON.gguf",
        "sub/nul.gguf",
        "a//b.gguf",
    ],
)
def test_hostile_names_are_refused(tmp_path, name):
    with pytest.raises(UnsafeNameError, match="refused"):
        safe_join(tmp_path, name)


def test_ordinary_names_stay_inside(tmp_path):
    assert (
        safe_join(tmp_path, "owner", "repo", "sub/M-Q4_K_M.gguf")
        == (tmp_path / "owner" / "repo" / "sub" / "M-Q4_K_M.gguf").resolve()
    )


def test_a_symlink_inside_the_library_cannot_lead_out(tmp_path):
    root = tmp_path / "lib"
    root.mkdir()
    (root / "evil").symlink_to(tmp_path)
    with pytest.raises(UnsafeNameError):
        safe_join(root, "evil/x.gguf")


def test_catalog_ships_a_dozen_instruct_models_from_half_a_b_to_70b():
    entries = hub.catalog()
    assert len(entries) >= 12
    sizes = [e.params_b for e in entries]
    assert min(sizes) <= 0.5 and max(sizes) >= 70
    assert len({e.publisher for e in entries}) >= 5
    assert all(e.repo_id.count("/") == 1 and "gguf" in e.repo_id.lower() for e in entries)
