"""Verified, resumable downloads from the Hub imitation into the library (real huggingface_hub)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.cli import run_cli
from app.core import download, settings
from app.core import hub as hubapi
from app.core.cancel import CancelToken
from app.core.hub import HubError
from app.core.library import Library
from tests.hub_fixtures import GATED_REPO, TINY_REPO

Q8 = "quantdesk-test-Q8_0.gguf"
Q4 = "quantdesk-test-Q4_K_M.gguf"
FAST = {"backoff_s": 0.01, "margin_bytes": 0}
# Bytes a killed or dropped transfer may have had in flight (socket buffers + one server chunk).
IN_FLIGHT = 128 * 1024


def _run(gen) -> list[download.DownloadProgress]:
    return list(gen)


def _variant(quant: str) -> hubapi.Variant:
    return hubapi.pick_variant(hubapi.list_variants(TINY_REPO), quant)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _models_on_disk(library: Library) -> list[Path]:
    return [p for p in library.folder.rglob("*.gguf") if ".partial" not in p.parts]


def test_pull_lands_a_verified_model_with_provenance(hub, hub_repos, capsys):
    assert run_cli(["pull", TINY_REPO, "Q4_K_M", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    path = Path(record["path"])
    assert path.read_bytes() == hub_repos[TINY_REPO][Q4].read_bytes()
    assert path.parent == Library().folder / "quantdesk-test" / "tiny-GGUF"
    assert record["quant"] == "Q4_K_M"  # confirmed from the header
    assert record["sha256"] == hub.sha256(TINY_REPO, Q4)
    assert record["commit"] == hub.commit(TINY_REPO)
    assert record["repo"] == TINY_REPO and record["file"] == Q4 and record["source"] == "hub"
    assert not list((Library().folder / ".partial").iterdir())  # no partial or sidecar left
    # pulling again is a no-op: nothing more is fetched
    served = hub.served(TINY_REPO, Q4)
    assert run_cli(["pull", TINY_REPO, Q4]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    assert hub.served(TINY_REPO, Q4) == served


def test_progress_reports_bytes_speed_and_eta(hub):
    hub.throttle(2_000_000)
    steps = _run(download.download(_variant("Q8_0"), **FAST))
    flowing = [s for s in steps if s.state == "downloading"]
    assert len(flowing) >= 3
    assert all(a.bytes_done <= b.bytes_done for a, b in zip(flowing, flowing[1:], strict=False))
    assert any(s.speed_bps > 500_000 and s.eta_s is not None for s in flowing)
    assert steps[-1].state == "done" and steps[-1].bytes_done == steps[-1].bytes_total


def test_sharded_variant_is_all_or_nothing(hub, hub_repos):
    variant = _variant("F16")
    last = variant.files[-1].name
    hub.fail(404, times=100, match=last, error_code="EntryNotFound")
    library = Library()
    with pytest.raises(HubError, match="does not exist") as info:
        _run(download.download(variant, library, **FAST))
    assert info.value.kind == "not_found"
    assert library.list() == [] and _models_on_disk(library) == []
    hub._faults.clear()
    steps = _run(download.download(variant, library, **FAST))
    model = steps[-1].model
    assert model is not None and model.quant == "F16" and len(model.files) == 3
    for f, path in zip(variant.files, model.files, strict=True):
        assert path.name == f.name and _sha(path) == f.sha256
        assert hub.served(TINY_REPO, f.name) == f.size  # the verified shards were not fetched twice
    assert {s.shard for s in steps} == {1, 2, 3} and steps[-1].shards == 3


def test_dropped_connection_is_resumed_with_range(hub, hub_repos):
    hub.drop_after(Q8, 300_000, times=2)
    steps = _run(download.download(_variant("Q8_0"), **FAST))
    assert [s.state for s in steps].count("retrying") == 2
    assert _sha(steps[-1].model.path) == hub.sha256(TINY_REPO, Q8)
    assert hub.file_requests(Q8) == [None, "bytes=300000-", "bytes=600000-"]
    assert hub.served(TINY_REPO, Q8) == hub_repos[TINY_REPO][Q8].stat().st_size


def test_server_errors_are_retried_then_reported(hub):
    hub.fail(503, times=2, match=Q8)
    steps = _run(download.download(_variant("Q8_0"), **FAST))
    assert steps[-1].state == "done"
    hub.fail(500, times=100, match=Q4)
    library = Library()
    with pytest.raises(HubError, match="500 .*try again later") as info:
        _run(download.download(_variant("Q4_K_M"), library, retries=2, **FAST))
    assert info.value.kind == "server"
    assert [m.hub_file for m in library.list()] == [Q8]


def test_flipped_byte_is_caught_and_nothing_enters_the_library(hub, capsys):
    hub.flip_byte(Q8, 777_777)
    assert run_cli(["pull", TINY_REPO, "Q8_0"]) == 1
    err = capsys.readouterr().err
    assert "failed verification" in err and hub.sha256(TINY_REPO, Q8) in err
    library = Library()
    assert library.list() == [] and _models_on_disk(library) == []
    assert not list((library.folder / ".partial").iterdir())  # the bad copy is gone


def test_missing_file_and_missing_quant_are_clear(hub, capsys):
    variant = _variant("Q8_0")
    ghost = hub_file_variant(variant, "quantdesk-test-Q5_K_M.gguf")
    with pytest.raises(HubError, match="Q5_K_M.gguf does not exist") as info:
        _run(download.download(ghost, **FAST))
    assert info.value.kind == "not_found"
    assert run_cli(["pull", TINY_REPO, "Q3_K_S"]) == 1
    assert "has no Q3_K_S variant (it has: F16, Q2_K, Q4_K_M, Q8_0)" in capsys.readouterr().err
    assert run_cli(["pull", "nobody/nothing", "Q4_K_M"]) == 1
    assert "does not exist" in capsys.readouterr().err


def hub_file_variant(like: hubapi.Variant, name: str) -> hubapi.Variant:
    return hubapi.Variant(
        like.repo_id, like.commit, "Q5_K_M", (hubapi.HubFile(name, 1000, "ab" * 32),)
    )


def test_gated_repo_needs_the_users_token(hub, monkeypatch, capsys):
    assert run_cli(["pull", GATED_REPO, "Q4_K_M"]) == 1
    assert "is gated: accept its terms" in capsys.readouterr().err
    assert Library().list() == []
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    assert run_cli(["pull", GATED_REPO, "Q4_K_M"]) == 1
    assert "gated" in capsys.readouterr().err
    monkeypatch.delenv("HF_TOKEN")
    prefs = settings.load()
    prefs.hub_token = hub.token  # the token from Settings, as the GUI stores it
    prefs.save()
    assert run_cli(["pull", GATED_REPO, "Q4_K_M"]) == 0
    assert [m.repo_id for m in Library().list()] == [GATED_REPO]


def test_not_enough_free_disk_is_refused_before_any_byte(hub):
    library = Library()
    free = shutil.disk_usage(library.folder).free
    # A margin that leaves less room than the file needs: the real free space decides.
    margin = free - 1000
    with pytest.raises(HubError, match="not enough free disk") as info:
        _run(download.download(_variant("Q8_0"), library, margin_bytes=margin))
    assert info.value.kind == "disk"
    assert hub.file_requests(Q8) == [] and hub.served(TINY_REPO, Q8) == 0


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 1 MiB tmpfs (needs root and mount rights; skipped elsewhere)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small filesystem needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)])
    if done.returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_small_real_filesystem_refuses_a_bigger_model(hub, small_filesystem):
    library = Library(folder=small_filesystem / "models")
    with pytest.raises(HubError, match="not enough free disk"):
        _run(download.download(_variant("Q8_0"), library, margin_bytes=0))
    assert hub.file_requests(Q8) == []
    # the small one fits
    steps = _run(download.download(_variant("Q2_K"), library, margin_bytes=0))
    assert steps[-1].model.path.is_relative_to(small_filesystem)


@pytest.mark.parametrize("name", ["../../x.gguf", "/tmp/evil-x.gguf", "..\\..\\x.gguf", "C:x.gguf"])
def test_hostile_hub_file_names_are_refused(hub, hub_repos, name, tmp_path):
    hub.add_repo("evil/repo-GGUF", {name: hub_repos[TINY_REPO][Q4]})
    library = Library()
    variant = hubapi.pick_variant(hubapi.list_variants("evil/repo-GGUF"), name)
    with pytest.raises(HubError, match="refused") as info:
        _run(download.download(variant, library, **FAST))
    assert info.value.kind == "refused"
    assert hub.file_requests(name) == []
    assert not Path("/tmp/evil-x.gguf").exists()
    assert not (library.folder.parent / "x.gguf").exists() and library.list() == []


def test_pause_then_resume_continues_with_range(hub, hub_repos):
    hub.throttle(1_000_000)
    variant = _variant("Q8_0")
    size = variant.size_bytes
    stop = CancelToken()
    library = Library()
    steps = []
    for step in download.download(variant, library, stop=stop, **FAST):
        steps.append(step)
        if step.bytes_done > size // 3:
            stop.pause()
    assert steps[-1].state == "paused"
    pending = download.pending_downloads(library)
    assert [p.variant.file for p in pending] == [Q8]
    assert size // 3 < pending[0].bytes_done < size
    hub.throttle(None)
    steps = _run(download.download(pending[0].variant, library, **FAST))
    assert steps[0].state == "resuming"
    assert _sha(steps[-1].model.path) == hub.sha256(TINY_REPO, Q8)
    ranges = hub.file_requests(Q8)
    assert ranges[0] is None and ranges[1] == f"bytes={pending[0].bytes_done}-"
    assert hub.served(TINY_REPO, Q8) <= size + IN_FLIGHT
    assert download.pending_downloads(library) == []


def test_cancel_keeps_the_partial_and_discard_removes_it(hub):
    hub.throttle(1_000_000)
    variant = _variant("Q8_0")
    stop = CancelToken()
    steps = []
    for step in download.download(variant, stop=stop, **FAST):
        steps.append(step)
        if step.bytes_done > 100_000:
            stop.cancel()
    assert steps[-1].state == "cancelled"
    assert download.pending_downloads()
    download.discard(variant)
    assert download.pending_downloads() == [] and Library().list() == []


def test_killed_pull_resumes_without_fetching_bytes_twice(hub, hub_repos):
    size = hub_repos[TINY_REPO][Q8].stat().st_size
    hub.throttle(400_000)  # ~4 s for the file, so "halfway" is reliable
    part = Library().folder / ".partial" / f"{hub.sha256(TINY_REPO, Q8)}.part"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "pull", TINY_REPO, "Q8_0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size >= size // 2):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the pull did not get halfway"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    have = part.stat().st_size
    assert size // 2 <= have < size
    assert Library().list() == []
    sidecar = json.loads(part.with_suffix(".json").read_text())
    assert sidecar["repo_id"] == TINY_REPO and sidecar["file"] == Q8 and sidecar["size"] == size
    hub.throttle(None)
    done = subprocess.run(
        [sys.executable, "-m", "app", "pull", TINY_REPO, "Q8_0", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert _sha(Path(record["path"])) == hub.sha256(TINY_REPO, Q8) == record["sha256"]
    ranges = hub.file_requests(Q8)
    assert len(ranges) == 2 and ranges[1] is not None
    resumed_from = int(ranges[1].split("=")[1].rstrip("-"))
    assert resumed_from >= size // 2
    assert hub.served(TINY_REPO, Q8) <= size + IN_FLIGHT


def test_redirected_download_resumes_at_the_cdn(hub, hub_repos):
    hub.redirect = True  # the real Hub sends LFS files from a CDN
    hub.drop_after(Q8, 500_000)
    steps = _run(download.download(_variant("Q8_0"), **FAST))
    assert _sha(steps[-1].model.path) == hub.sha256(TINY_REPO, Q8)
    cdn = [r for m, p, r in hub.requests if m == "GET" and p.startswith("/cdn/")]
    assert cdn == [None, "bytes=500000-"]
    assert hub.served(TINY_REPO, Q8) == hub_repos[TINY_REPO][Q8].stat().st_size


def test_a_server_that_ignores_range_restarts_from_zero(hub):
    hub.throttle(1_000_000)
    variant = _variant("Q8_0")
    stop = CancelToken()
    for step in download.download(variant, stop=stop, **FAST):
        if step.bytes_done > 300_000:
            stop.pause()
    hub.throttle(None)
    hub.honor_range = False
    steps = _run(download.download(variant, **FAST))
    assert _sha(steps[-1].model.path) == hub.sha256(TINY_REPO, Q8)
    assert hub.file_requests(Q8)[-1] is not None  # it asked for the rest, got the whole file


def test_the_token_is_not_sent_to_the_cdn(hub, monkeypatch):
    hub.redirect = True
    monkeypatch.setenv("HF_TOKEN", hub.token)
    steps = _run(download.pull(GATED_REPO, "Q4_K_M", **FAST))
    assert steps[-1].state == "done"
    assert any(p.startswith("/cdn/") for _, p, _ in hub.requests)
    assert hub.auth_at_cdn == []


def test_the_same_variant_cannot_download_twice_at_once(hub):
    hub.throttle(500_000)
    variant = _variant("Q8_0")
    stop = CancelToken()
    first = download.download(variant, stop=stop, **FAST)
    assert next(first).state == "downloading"  # the first one holds the variant now
    with pytest.raises(HubError, match="already being downloaded") as info:
        _run(download.download(variant, **FAST))
    assert info.value.kind == "busy"
    stop.pause()
    assert list(first)[-1].state == "paused"  # pausing lets go of the variant
    hub.throttle(None)
    steps = _run(download.download(variant, **FAST))
    assert _sha(steps[-1].model.path) == hub.sha256(TINY_REPO, Q8)
    assert not list((Library().folder / ".partial").iterdir())


@pytest.mark.parametrize("sha", [None, "../" * 21 + "x", "A" * 64, "0" * 63])
def test_a_missing_or_malformed_sha256_is_refused(hub, sha):
    like = _variant("Q8_0")
    bad = hubapi.Variant(
        like.repo_id, like.commit, "Q8_0", (hubapi.HubFile(Q8, like.size_bytes, sha),)
    )
    with pytest.raises(HubError, match="no valid SHA-256") as info:
        _run(download.download(bad, **FAST))
    assert info.value.kind == "refused" and hub.file_requests(Q8) == []


def test_pull_in_a_terminal_draws_a_progress_bar(hub):
    import pty

    hub.throttle(3_000_000)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "pull", TINY_REPO, "Q8_0"],
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    drawn = b""
    while True:
        try:
            block = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not block:
            break
        drawn += block
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 0
    assert Path(out.decode().strip()).name == Q8  # stdout stays clean: just the path
    text = drawn.decode(errors="replace")
    assert "downloading [" in text and "100.0%" in text and "\r" in text


@pytest.mark.parametrize("repo", ["not a repo", "a/b/c", "../x", "owner/" + "n" * 200])
def test_malformed_repo_id_is_one_line_error(hub, repo, capsys):
    for cmd in (["variants", repo], ["pull", repo, "Q4_K_M"]):
        assert run_cli(cmd) != 0
        err = capsys.readouterr().err
        assert "not a Hub repo id" in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
    with pytest.raises(HubError) as info:
        hubapi.list_variants(repo)
    assert info.value.kind == "request"


def test_disk_full_during_the_last_chunk_keeps_the_partial(hub, hub_repos, small_filesystem):
    """The disk fills while the final bytes are written: "disk full", partial kept, resume works."""
    hub.throttle(300_000)
    library = Library(folder=small_filesystem / "models")
    variant = _variant("Q2_K")
    size = variant.size_bytes
    part = download.partial_dir(library) / f"{variant.files[0].sha256}.part"
    filler = small_filesystem / "filler"
    steps = download.download(variant, library, margin_bytes=0, backoff_s=0.01)
    assert next(steps).state == "downloading"
    # Leave room for all but the last 8 KiB: the free space runs out inside the final chunk.
    # Free space first, then the partial: bytes written in between only make the shortfall larger.
    free = shutil.disk_usage(small_filesystem).free
    have = part.stat().st_size
    filler.write_bytes(b"\0" * max(0, free - (size - have) + 8192))
    with pytest.raises(HubError, match="disk full") as info:
        _run(steps)
    assert info.value.kind == "disk_full"
    kept = part.stat().st_size
    assert size - 64 * 1024 < kept < size  # the partial holds everything that fitted
    assert [p.variant.file for p in download.pending_downloads(library)] == [variant.file]
    filler.unlink()
    hub.throttle(None)
    done = _run(download.download(variant, library, margin_bytes=0, backoff_s=0.01))
    assert done[-1].state == "done"
    assert _sha(done[-1].model.path) == hub.sha256(TINY_REPO, variant.file)
    assert hub.file_requests(variant.file)[-1] == f"bytes={kept}-"


def test_remote_header_errors_carry_kind_and_status(hub):
    from app.core.gguf_header import GGUFError, read_url

    spec = read_url(hubapi.file_url(TINY_REPO, Q4, "main"))  # through huggingface_hub's session
    assert spec.quant == "Q4_K_M" and spec.raw_header and spec.header_bytes_read < 1 << 20
    with pytest.raises(GGUFError) as info:
        read_url(hubapi.file_url(TINY_REPO, "missing.gguf", "main"))
    assert info.value.kind == "not_found" and info.value.status == 404
    with pytest.raises(GGUFError) as info:
        read_url(hubapi.file_url(GATED_REPO, "gated-Q4_K_M.gguf", "main"))
    assert info.value.kind in ("gated", "auth") and info.value.status in (401, 403)
