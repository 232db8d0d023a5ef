"""The local library: import, list, rm, and working with no network at all."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.cli import run_cli
from app.core import download, paths, settings
from app.core import hub as hubapi
from app.core.engine import Engine, GenerationStats, Sampling
from app.core.gguf_header import GGUFError
from app.core.library import Library, LibraryError
from tests import modelfactory
from tests.hub_fixtures import TINY_REPO, make_shards


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _import(library: Library, path: Path):
    return list(library.import_file(path))


def test_import_hashes_checks_the_header_and_records_provenance(tmp_path, capsys):
    src = tmp_path / "mine.gguf"
    shutil.copy(modelfactory.model_path("Q6_K"), src)
    assert run_cli(["import", str(src), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["path"] == str(src.resolve())  # imported files stay where they are
    assert record["sha256"] == _sha(src)
    assert record["quant"] == "Q6_K" and record["source"] == "import" and record["repo"] is None
    assert record["size_bytes"] == src.stat().st_size and record["architecture"] == "llama"
    # the row lives in the app's one SQLite file, in our own table
    with sqlite3.connect(paths.database_path()) as db:
        assert db.execute("SELECT count(*) FROM library_models").fetchone()[0] == 1


def test_import_reports_progress_and_can_be_cancelled(tmp_path):
    src = tmp_path / "m.gguf"
    shutil.copy(modelfactory.model_path("Q8_0"), src)
    library = Library()
    steps = _import(library, src)
    assert steps[0].state == "hashing" and steps[-1].state == "done"
    assert steps[-1].bytes_done == src.stat().st_size and steps[-1].model is not None
    library.remove(steps[-1].model)
    stop = threading.Event()
    stop.set()
    steps = list(library.import_file(src, cancel=stop))
    assert steps[-1].state == "cancelled" and library.list() == []


def test_import_refuses_what_is_not_a_whole_gguf(tmp_path):
    library = Library()
    text = tmp_path / "notes.gguf"
    text.write_text("hello, not a model")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        _import(library, text)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(modelfactory.model_path("Q4_0").read_bytes()[:400_000])
    with pytest.raises(GGUFError, match="truncated"):
        _import(library, cut)
    with pytest.raises(LibraryError, match="does not exist"):
        _import(library, tmp_path / "nope.gguf")
    assert library.list() == []


def test_import_of_a_split_model_takes_every_shard(tmp_path):
    shards = make_shards(modelfactory.model_path("F16"))
    for s in shards:
        shutil.copy(s, tmp_path / s.name)
    library = Library()
    model = _import(library, tmp_path / shards[1].name)[-1].model
    assert model.path.name == shards[0].name and len(model.files) == 3
    assert model.sha256 == [_sha(s) for s in shards] and model.quant == "F16"
    (tmp_path / shards[2].name).unlink()
    library.remove(model, delete_files=False)
    with pytest.raises(LibraryError, match="shards are missing"):
        _import(library, tmp_path / shards[0].name)


def test_list_and_rm(hub, tmp_path, capsys):
    list(download.pull(TINY_REPO, "Q2_K", margin_bytes=0))
    outside = tmp_path / "outside.gguf"
    shutil.copy(modelfactory.model_path("Q4_0"), outside)
    assert run_cli(["import", str(outside)]) == 0
    capsys.readouterr()
    assert run_cli(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(m["quant"], m["source"], m["present"]) for m in listed] == [
        ("Q2_K", "hub", True),
        ("Q4_0", "import", True),
    ]
    pulled = Path(listed[0]["path"])
    assert run_cli(["rm", "quantdesk-test-Q2_K.gguf"]) == 0
    assert "1 file(s) deleted" in capsys.readouterr().out
    assert not pulled.exists() and not pulled.parent.exists()  # empty repo folder pruned
    assert run_cli(["rm", "outside.gguf"]) == 0  # imported from elsewhere: forgotten, kept
    assert outside.exists()
    assert run_cli(["rm", "outside.gguf"]) == 1
    assert "no model 'outside.gguf' in the library" in capsys.readouterr().err
    assert run_cli(["list"]) == 0 and "library is empty" in capsys.readouterr().out


def test_missing_files_show_up_as_not_present(tmp_path):
    src = tmp_path / "gone.gguf"
    shutil.copy(modelfactory.model_path("Q2_K"), src)
    library = Library()
    _import(library, src)
    src.unlink()
    assert [m.present for m in library.list()] == [False]


def test_library_folder_and_offline_switch_come_from_settings(hub, tmp_path):
    prefs = settings.load()
    prefs.library_dir = str(tmp_path / "my-models")
    prefs.save()
    model = list(download.pull(TINY_REPO, "Q2_K", margin_bytes=0))[-1].model
    assert model.path.is_relative_to(tmp_path / "my-models")
    prefs.offline = True
    prefs.save()
    with pytest.raises(hubapi.OfflineError):
        hubapi.search("tiny")
    assert [m.id for m in Library().list()] == [model.id]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_the_library_lists_and_a_model_loads(hub, monkeypatch, tmp_path):
    model = list(download.pull(TINY_REPO, "Q4_K_M", margin_bytes=0))[-1].model
    assert model is not None
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    listed = subprocess.run(
        [sys.executable, "-m", "app", "list", "--json"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert [m["sha256"] for m in json.loads(listed.stdout)] == [model.sha256[0]]
    with pytest.raises(hubapi.OfflineError):
        hubapi.list_variants(TINY_REPO)
    with pytest.raises(hubapi.OfflineError):  # a pull says "offline" instead of trying
        list(download.pull(TINY_REPO, "Q8_0"))
    # pulling what is already there needs no network
    held = hubapi.Variant(
        TINY_REPO,
        model.commit or "",
        "Q4_K_M",
        (hubapi.HubFile(model.hub_file or "", model.size_bytes, model.sha256[0]),),
    )
    again = list(download.download(held, margin_bytes=0))
    assert again[-1].message == "already in the library"
    engine = Engine(log_dir=tmp_path / "logs")
    try:
        engine.load(Library().get(model.id).path, n_ctx=256)
        items = list(
            engine.chat(
                [{"role": "user", "content": "hi"}],
                max_tokens=4,
                sampling=Sampling.preset("greedy"),
            )
        )
        assert isinstance(items[-1], GenerationStats) and items[-1].tokens > 0
    finally:
        engine.close()


def test_a_pulled_split_model_loads_from_its_first_shard(hub, tmp_path):
    model = list(download.pull(TINY_REPO, "F16", margin_bytes=0))[-1].model
    assert model is not None and len(model.files) == 3
    assert model.path.name.endswith("-00001-of-00003.gguf")
    engine = Engine(log_dir=tmp_path / "logs")
    try:
        info = engine.load(model.path, n_ctx=256)  # llama.cpp finds shards 2 and 3 by name
        assert info.n_ctx >= 256
    finally:
        engine.close()
