"""Verified, resumable downloads from the Hub into the library.

:func:`download` is a generator of :class:`DownloadProgress`; run it off the GUI thread.  Why not
huggingface_hub's own downloader: since 1.18 it deletes its partial file on failure, so it cannot
resume after the app was killed.  We use huggingface_hub for URLs, headers, token and its HTTP
session (TLS verification on, as it always is there) and keep the transfer ours:

* bytes land in ``<library>/.partial/<sha256>.part`` (content-addressed, so an untrusted Hub name
  never becomes a path until it has been checked) next to a ``.json`` sidecar that records repo,
  commit, file, size and sha256 -- enough to list and resume unfinished downloads after a restart;
* resuming re-hashes the partial prefix (hash state cannot be saved portably; it is fast) and asks
  for the rest with ``Range: bytes=N-``;
* SHA-256 is computed while bytes arrive, in a writer thread fed by a small queue, so hashing
  overlaps the network instead of slowing it;
* dropped connections, timeouts and 5xx/429 answers are retried with exponential backoff;
* free disk (size + margin) is checked before the first byte is requested;
* only when every file of the variant matches its sha256 and its GGUF header parses are the files
  moved (atomic renames on one filesystem) into ``<library>/<owner>/<repo>/``: all shards or none.

A :class:`app.core.cancel.CancelToken` (or any ``threading.Event``) pauses or cancels at the next chunk; both keep the
partial file, so calling :func:`download` again continues where it stopped.  Failures raise
:class:`~app.core.hub.HubError` (``kind``: offline, not_found, gated, auth, server, network, disk,
corrupt, refused, busy -- the same variant is already downloading elsewhere).
"""

from __future__ import annotations

import errno
import hashlib
import json
import queue
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from huggingface_hub import get_session
from huggingface_hub.utils import hf_raise_for_status

from app.core import gguf_header, hub
from app.core.cancel import CancelToken
from app.core.errors import ErrorKind
from app.core.hub import HubError, HubFile, OfflineError, Variant
from app.core.library import (
    Library,
    LibraryModel,
    UnsafeNameError,
    fsync_dir,
    hash_into,
    safe_join,
)
from app.core.units import human_bytes

DEFAULT_MARGIN = 512 << 20  # keep this much free after the download: the OS and swap need room
_QUEUE_CHUNKS = 16
_TICK = 0.2  # seconds between progress items while bytes flow
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())


@dataclass
class DownloadProgress:
    """One step of a download (all counts over the whole variant, shards included)."""

    repo_id: str
    file: str
    state: str  # starting, resuming, downloading, retrying, verifying, done, paused, cancelled
    bytes_done: int
    bytes_total: int
    speed_bps: float = 0.0
    eta_s: float | None = None
    shard: int = 1
    shards: int = 1
    message: str = ""
    model: LibraryModel | None = field(default=None, repr=False)

    @property
    def fraction(self) -> float:
        return self.bytes_done / self.bytes_total if self.bytes_total else 0.0


@dataclass
class PendingDownload:
    """An unfinished download found on disk (for example after a restart)."""

    variant: Variant
    bytes_done: int


def partial_dir(library: Library) -> Path:
    path = library.folder / ".partial"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pending_downloads(library: Library | None = None) -> list[PendingDownload]:
    """Unfinished downloads recorded by sidecars, one per variant."""
    library = library or Library()
    found: dict[tuple[str, str], PendingDownload] = {}
    for sidecar in sorted(partial_dir(library).glob("*.json")):
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
            variant = _variant_from_json(data["variant"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a torn or foreign sidecar: ignore it rather than fail the listing
        part = sidecar.with_suffix(".part")
        have = part.stat().st_size if part.exists() else 0
        key = (variant.repo_id, variant.file)
        if key in found:
            found[key].bytes_done += have
        else:
            found[key] = PendingDownload(variant, have)
    return list(found.values())


def discard(variant: Variant, library: Library | None = None) -> None:
    """Delete the partial files of ``variant`` (what the Cancel-and-forget button does)."""
    folder = partial_dir(library or Library())
    for f in variant.files:
        if f.sha256:
            for suffix in (".part", ".json"):
                (folder / f"{f.sha256}{suffix}").unlink(missing_ok=True)


def pull(
    repo_id: str, quant_or_file: str, library: Library | None = None, **options: object
) -> Iterator[DownloadProgress]:
    """Resolve ``quant_or_file`` among the repo's variants, then :func:`download` it."""
    variant = hub.pick_variant(hub.list_variants(repo_id), quant_or_file)
    yield from download(variant, library, **options)  # type: ignore[arg-type]


def download(
    variant: Variant,
    library: Library | None = None,
    *,
    stop: threading.Event | None = None,
    token: str | None = None,
    margin_bytes: int = DEFAULT_MARGIN,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 30.0,
) -> Iterator[DownloadProgress]:
    """Download ``variant`` into the library, verified; the last item has state done/paused/cancelled."""
    library = library or Library()
    try:
        folder = library.hub_folder(variant.repo_id)
        finals = [safe_join(folder, f.name) for f in variant.files]
    except UnsafeNameError as exc:
        raise HubError(str(exc), "refused") from exc
    for f in variant.files:
        # The sha256 names the partial file, so it must be exactly 64 hex digits, nothing else.
        if not f.sha256 or not _SHA256_RE.fullmatch(f.sha256):
            raise HubError(
                f"the Hub gives no valid SHA-256 for {f.name}: it cannot be verified", "refused"
            )
    total = variant.size_bytes
    step = _Reporter(variant, total)
    existing = library.find_hub(variant.repo_id, variant.file)
    if existing is not None and existing.sha256 == [f.sha256 for f in variant.files]:
        yield step.item("done", total, message="already in the library", model=existing)
        return
    if hub.offline_mode():
        raise OfflineError("offline mode is on: downloads need the Hub")
    parts = partial_dir(library)
    have = [_part_size(parts, f) for f in variant.files]
    _check_free_disk(
        parts, sum(f.size - h for f, h in zip(variant.files, have, strict=True)), margin_bytes
    )
    stop = stop or CancelToken()
    headers = hub.request_headers(token)
    with _exclusive(parts, variant):
        done_before = 0
        for index, f in enumerate(variant.files, start=1):
            step.shard = index
            _write_sidecar(parts, variant, f)
            url = hub.file_url(variant.repo_id, f.name, variant.commit)
            fetch = _FileFetch(variant.repo_id, f, parts, url, headers, stop)
            fetch.configure(retries, backoff_s, timeout_s)
            for state, nbytes, message in fetch.run():
                yield step.item(state, done_before + nbytes, message=message)
            if stop.is_set():
                reason = getattr(stop, "reason", "cancelled")
                done = done_before + fetch.have
                yield step.item(reason, done, message=f"{reason}; it will resume")
                return
            done_before += f.size
        yield step.item("verifying", total, message="checking the GGUF headers")
        model = _install(library, variant, parts, finals)
    yield step.item("done", total, message=str(model.path), model=model)


# -- helpers ---------------------------------------------------------------------------------------
@contextmanager
def _exclusive(parts: Path, variant: Variant) -> Iterator[None]:
    """One writer per variant across threads and processes (the OS drops the lock if we die)."""
    lock = parts / f"{variant.files[0].sha256}.lock"
    handle = lock.open("a+b")
    try:
        try:
            if sys.platform == "win32":
                import msvcrt

                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise HubError(
                f"{variant.file} is already being downloaded (in another window or process)",
                ErrorKind.BUSY,
            ) from None
        yield
    finally:
        leftovers = [
            p for f in variant.files for p in parts.glob(f"{f.sha256}.*") if p.suffix != ".lock"
        ]
        if not leftovers:  # finished or discarded: no lock file left behind
            lock.unlink(missing_ok=True)
        handle.close()


def _part_size(parts: Path, f: HubFile) -> int:
    part = parts / f"{f.sha256}.part"
    return min(part.stat().st_size, f.size) if part.exists() else 0


def _check_free_disk(folder: Path, needed: int, margin: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed + margin > free:
        raise HubError(
            f"not enough free disk in {folder.parent}: the download needs {human_bytes(needed)} plus "
            f"{human_bytes(margin)} to spare, and {human_bytes(free)} is free. Nothing was downloaded.",
            "disk",
        )


def _write_sidecar(parts: Path, variant: Variant, f: HubFile) -> None:
    data = {
        "repo_id": variant.repo_id,
        "commit": variant.commit,
        "file": f.name,
        "sha256": f.sha256,
        "size": f.size,
        "variant": variant.as_json(),
        "updated": time.time(),
    }
    tmp = parts / f"{f.sha256}.json.tmp"
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(parts / f"{f.sha256}.json")


def _variant_from_json(data: dict) -> Variant:
    files = tuple(HubFile(x["file"], int(x["size_bytes"]), x["sha256"]) for x in data["files"])
    return Variant(data["repo"], data["commit"], data["quant"], files)


def _install(library: Library, variant: Variant, parts: Path, finals: list[Path]) -> LibraryModel:
    """Header-check every verified part, then move them all into place (or none)."""
    sources = [parts / f"{f.sha256}.part" for f in variant.files]
    specs = []
    name = variant.file
    try:
        for f, src in zip(variant.files, sources, strict=True):
            name = f.name
            specs.append(gguf_header.read_local(src))
        if len(specs) > 1:
            name = variant.file
            gguf_header.merge_shards(specs)  # the model rules apply to the shards together
    except gguf_header.GGUFError as exc:
        # The bytes are exactly the publisher's (the SHA-256 matched), so fetching them again
        # cannot help: drop them rather than keep a partial that can never be installed.
        discard(variant, library)
        raise HubError(
            f"{name} matches its SHA-256 but llama.cpp could not load it: {exc}. It was not "
            "added to the library.",
            ErrorKind.INVALID_FILE,
        ) from exc
    moved: list[Path] = []
    try:
        for src, dst in zip(sources, finals, strict=True):
            dst.parent.mkdir(parents=True, exist_ok=True)
            src.replace(dst)
            moved.append(dst)
        fsync_dir(finals[0].parent)
    except OSError as exc:
        for src, dst in zip(sources, moved, strict=False):
            dst.replace(src)  # put them back: a half-installed split model must not appear
        raise HubError(f"could not move the model into the library: {exc}", "disk") from exc
    for f in variant.files:
        (parts / f"{f.sha256}.json").unlink(missing_ok=True)
    shas = [f.sha256 or "" for f in variant.files]
    return library.add(
        finals,
        shas,
        source="hub",
        repo_id=variant.repo_id,
        commit=variant.commit,
        hub_file=variant.file,
    )


class _Reporter:
    """Turns byte counts into progress items with a speed over the last few seconds."""

    def __init__(self, variant: Variant, total: int) -> None:
        self.variant = variant
        self.total = total
        self.shard = 1
        self.samples: list[tuple[float, int]] = []

    def item(
        self, state: str, done: int, *, message: str = "", model: LibraryModel | None = None
    ) -> DownloadProgress:
        now = time.monotonic()
        if state == "downloading":
            self.samples.append((now, done))
            while len(self.samples) > 2 and now - self.samples[0][0] > 3.0:
                self.samples.pop(0)
        else:
            self.samples.clear()  # a resume or retry must not count re-hashed bytes as speed
        speed = 0.0
        if len(self.samples) >= 2:
            (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
            speed = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
        eta = (self.total - done) / speed if speed > 0 else None
        return DownloadProgress(
            self.variant.repo_id,
            self.variant.file,
            state,
            done,
            self.total,
            speed,
            eta,
            self.shard,
            self.variant.shards,
            message,
            model,
        )


class _Sink:
    """Writes and hashes chunks in a thread, so hashing overlaps the network reads."""

    def __init__(self, part: Path, h: hashlib._Hash) -> None:
        self.h = h
        self.handle = part.open("ab", buffering=0)  # unbuffered: a kill loses no written chunk
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="download-sink", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (chunk := self.queue.get()) is not None:
            if self.error is not None:
                continue  # keep draining so the producer never blocks on a dead sink
            try:
                self._write(chunk)
            except BaseException as exc:  # disk full, I/O error: reported by close()
                self.error = exc

    def _write(self, chunk: bytes) -> None:
        """Write all of ``chunk``, hashing exactly the bytes that reached the file.

        An unbuffered write may be short (a filling disk takes what fits and reports the rest only
        on the next call), so loop; the hash must never cover bytes that are not in the partial,
        or a resume would start from a wrong hash state."""
        view = memoryview(chunk)
        while view:
            written = self.handle.write(view)
            if written is None:  # non-blocking file: not possible for a regular file
                written = 0
            if written:
                self.h.update(view[:written])
                view = view[written:]
            if not written:
                raise OSError(errno.ENOSPC, "no space left on device")

    def put(self, chunk: bytes) -> None:
        if self.error is not None:
            self.close()
        self.queue.put(chunk)

    def close(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        try:
            self.handle.close()
        except OSError as exc:  # a close can report a deferred write error (NFS, quotas)
            self.error = self.error or exc
        if self.error is not None:
            raise _write_error(self.error) from self.error


def _write_error(exc: BaseException) -> HubError:
    """Disk full (ENOSPC, EDQUOT, EFBIG) says so; the partial stays for a resume."""
    code = getattr(exc, "errno", None)
    if code in _FULL_ERRNOS:
        return HubError(
            "disk full: the download stopped because the disk holding the library has no room "
            "left. What arrived is kept; free some space and run the download again to resume.",
            ErrorKind.DISK_FULL,
        )
    return HubError(f"writing the download failed: {exc}. What arrived is kept.", "disk")


class _FileFetch:
    """One file: resume from the partial, stream the rest with retries, verify the hash."""

    def __init__(
        self,
        repo_id: str,
        f: HubFile,
        parts: Path,
        url: str,
        headers: dict[str, str],
        stop: threading.Event,
    ) -> None:
        self.repo_id = repo_id
        self.f = f
        self.part = parts / f"{f.sha256}.part"
        self.url = url
        self.headers = {**headers, "Accept-Encoding": "identity"}
        self.stop = stop
        self.configure(5, 1.0, 30.0)
        self.have = 0
        self.h = hashlib.sha256()

    def configure(self, retries: int, backoff_s: float, timeout_s: float) -> None:
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout = httpx2.Timeout(timeout_s, connect=min(timeout_s, 15.0))

    def run(self) -> Iterator[tuple[str, int, str]]:
        if self.part.exists() and self.part.stat().st_size > self.f.size:
            self.part.unlink()  # longer than the file: not ours to trust
        if self.part.exists():
            size = self.part.stat().st_size
            yield "resuming", 0, f"checking the {human_bytes(size)} already downloaded"
            for n in hash_into(self.h, self.part, size, self.stop):
                self.have = n
                yield "resuming", n, ""
            if self.stop.is_set():
                return
        failures = 0
        while self.have < self.f.size:
            if self.stop.is_set():
                return
            before = self.have
            try:
                yield from self._stream()
                if self.stop.is_set():
                    return
                if self.have < self.f.size:
                    raise httpx2.ReadError("the server closed the connection early")
            except (httpx2.TransportError, _Retryable) as exc:
                failures = 0 if self.have > before else failures + 1
                if failures > self.retries:
                    raise _give_up(exc, self.f.name) from exc
                delay = min(30.0, self.backoff_s * 2 ** max(0, failures - 1))
                yield "retrying", self.have, f"{_reason(exc)}; retrying in {delay:.0f} s"
                if self.stop.wait(delay):
                    return
        self._verify()

    def _stream(self) -> Iterator[tuple[str, int, str]]:
        headers = dict(self.headers)
        if self.have:
            headers["Range"] = f"bytes={self.have}-"
        with get_session().stream(
            "GET", self.url, headers=headers, timeout=self.timeout
        ) as response:
            status = response.status_code
            if status in _RETRY_STATUS:
                raise _Retryable(status)
            if status >= 400:
                response.read()
                with hub.hub_errors(self.repo_id, self.f.name):
                    hf_raise_for_status(response)
                raise hub.http_status_error(status, self.f.name)
            if self.have and status == 200:
                self._restart()  # the server ignored Range: take the whole body from byte 0
            elif status == 206 and not response.headers.get("Content-Range", "").startswith(
                f"bytes {self.have}-"
            ):
                raise HubError(f"the server sent the wrong part of {self.f.name}", "network")
            sink = _Sink(self.part, self.h)
            last = 0.0
            try:
                for chunk in response.iter_raw():
                    if self.stop.is_set():
                        break
                    sink.put(chunk)
                    self.have += len(chunk)
                    if self.have > self.f.size:
                        break
                    now = time.monotonic()
                    if now - last >= _TICK:
                        last = now
                        yield "downloading", self.have, ""
            finally:
                sink.close()
            if self.have > self.f.size:
                self._discard()
                raise HubError(f"the server sent more than {self.f.size} bytes", "corrupt")
            yield "downloading", self.have, ""

    def _restart(self) -> None:
        self.part.unlink(missing_ok=True)
        self.have = 0
        self.h = hashlib.sha256()

    def _discard(self) -> None:
        self.part.unlink(missing_ok=True)
        self.part.with_suffix(".json").unlink(missing_ok=True)

    def _verify(self) -> None:
        got = self.h.hexdigest()
        if got != self.f.sha256:
            self._discard()
            raise HubError(
                f"{self.f.name} failed verification: its SHA-256 is {got}, the publisher's is "
                f"{self.f.sha256}. The corrupted copy was deleted and nothing was added to the "
                "library; try the download again.",
                "corrupt",
            )


class _Retryable(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"the Hub answered {status}")
        self.status = status


def _reason(exc: BaseException) -> str:
    if isinstance(exc, _Retryable):
        return str(exc)
    return f"connection problem ({type(exc).__name__})"


def _give_up(exc: BaseException, name: str) -> HubError:
    if isinstance(exc, _Retryable):
        return hub.http_status_error(exc.status, name)
    if isinstance(exc, (httpx2.ConnectError, httpx2.ConnectTimeout)):
        return OfflineError(f"cannot reach {hub.endpoint()} to download {name}: you are offline?")
    return HubError(f"the download of {name} kept failing: {exc}. It will resume later.", "network")
