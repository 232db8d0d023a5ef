"""Pytest fixtures that serve the generated test models from a :class:`tests.hubsim.HubSim`.

``hub`` starts an imitation Hub with these repos and points the huggingface_hub client at it
(``HF_ENDPOINT``, a private ``HF_HOME``, no proxy for loopback, no Xet):

* ``quantdesk-test/tiny-GGUF`` (public, most downloads): ``quantdesk-test-{Q2_K,Q4_K_M,Q8_0}.gguf``
  and the F16 model split into three real gguf-split shards
  ``quantdesk-test-F16-0000N-of-00003.gguf`` (metadata in the first shard, ``split.*`` keys in all),
  which llama.cpp loads from the first shard;
* ``quantdesk-test/gated-GGUF`` (gated; the client needs ``hub.token``): ``gated-Q4_K_M.gguf``;
* ``other-org/notes`` (no GGUF: search with ``filter=gguf`` must not list it).

The shards are generated once with gguf's writer and cached beside the test models.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import modelfactory
from tests.hubsim import HubSim

TINY_REPO = "quantdesk-test/tiny-GGUF"
GATED_REPO = "quantdesk-test/gated-GGUF"
SHARD_COUNT = 3


def make_shards(src: Path, n_shards: int = SHARD_COUNT) -> list[Path]:
    """Split a GGUF into ``n_shards`` gguf-split shards (cached); returns them in order."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    stem = src.stem
    digest = hashlib.sha256(f"{src.stat().st_size}:{src.stat().st_mtime_ns}".encode()).hexdigest()
    folder = modelfactory.cache_root() / f"shards-{stem}-{n_shards}-{digest[:10]}"
    names = [folder / f"{stem}-{i:05d}-of-{n_shards:05d}.gguf" for i in range(1, n_shards + 1)]
    if all(p.exists() for p in names):
        return names
    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    per_shard = -(-len(reader.tensors) // n_shards)
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    writer = gguf.GGUFWriter(str(tmp / f"{stem}.gguf"), arch, split_max_tensors=per_shard)
    for fld in reader.fields.values():
        if fld.name == gguf.Keys.General.ARCHITECTURE or fld.name.startswith("GGUF."):
            continue
        vtype = fld.types[0]
        sub = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(fld.name, fld.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data)
    writer.close()
    written = sorted(tmp.glob(f"{stem}-*-of-*.gguf"))
    assert len(written) == n_shards, f"expected {n_shards} shards, got {written}"
    with contextlib.suppress(OSError):  # another session made the same shards first
        tmp.replace(folder)
    return names


def tiny_repo_files() -> dict[str, Path]:
    """The files of the public test repo: three single-file quants and a 3-shard F16."""
    files: dict[str, Path] = {
        f"quantdesk-test-{q}.gguf": modelfactory.model_path(q) for q in ("Q2_K", "Q4_K_M", "Q8_0")
    }
    for shard in make_shards(modelfactory.model_path("F16")):
        files[shard.name] = shard
    files["README.md"] = Path(__file__).with_name("hub_fixtures.py")  # any small non-GGUF file
    return files


def point_client_at(endpoint: str, monkeypatch: pytest.MonkeyPatch, hf_home: Path) -> None:
    """Environment that sends huggingface_hub (and child processes) to ``endpoint``."""
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.fixture(scope="session")
def hub_repos() -> dict[str, dict[str, Path]]:
    """The repos ``hub`` serves (generated once per session)."""
    return {
        TINY_REPO: tiny_repo_files(),
        GATED_REPO: {"gated-Q4_K_M.gguf": modelfactory.model_path("Q4_K_M")},
        "other-org/notes": {"README.md": Path(__file__)},
    }


@pytest.fixture
def hub(
    hub_repos: dict[str, dict[str, Path]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[HubSim]:
    """A running HubSim with the test repos; HF_ENDPOINT points at it for this test."""
    downloads = {TINY_REPO: 50_000, GATED_REPO: 20_000, "other-org/notes": 90_000}
    with HubSim(hub_repos, gated={GATED_REPO}, downloads=downloads) as sim:
        point_client_at(sim.endpoint, monkeypatch, tmp_path / "hf-home")
        yield sim
