"""The local model library: files on disk plus their provenance in the app's SQLite file.

Each model records where it came from (Hub repo, commit and file name, or "import"), the SHA-256 of
every file, the quant confirmed from the GGUF header, its size and when it was added.  Nothing here
touches the network, so the library works offline.  Long work (hashing an imported file) is a
generator of :class:`ImportProgress` that checks a cancel token (any ``threading.Event``) per block.

Files downloaded from the Hub live under ``<library>/<owner>/<repo>/<file>``; Hub names are
untrusted, so :func:`safe_join` refuses any name that would land outside the library folder.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from app.core import gguf_header, paths, settings
from app.core.errors import ErrorKind, QuantDeskError

_BLOCK = 4 << 20
_SCHEMA = """
CREATE TABLE IF NOT EXISTS library_models (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    files TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    quant TEXT NOT NULL,
    architecture TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    repo_id TEXT,
    commit_sha TEXT,
    hub_file TEXT,
    added_at TEXT NOT NULL
)
"""


_DEVICE_NAMES = {"CON", "PRN", "AUX", "NUL"} | {
    f"{p}{i}" for p in ("COM", "LPT") for i in range(10)
}


class LibraryError(QuantDeskError):
    """A library operation failed; the message says why and what was left untouched."""

    default_kind = ErrorKind.STORAGE


class UnsafeNameError(LibraryError):
    """A file name from the Hub would escape the library folder."""


@dataclass
class LibraryModel:
    """A model in the library and where it came from."""

    id: int
    path: Path  # the file to load (the first shard of a split model)
    files: list[Path]
    sha256: list[str]  # one per file
    size_bytes: int
    quant: str  # from the header's general.file_type
    architecture: str
    source: str  # "hub" or "import"
    repo_id: str | None
    commit: str | None
    hub_file: str | None
    added_at: str
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.path.name

    @property
    def present(self) -> bool:
        """False when a file was deleted or moved behind the app's back."""
        return all(p.is_file() for p in self.files)

    def as_json(self) -> dict[str, object]:
        """The ``quantdesk list --json`` record."""
        return {
            "id": self.id,
            "name": self.name,
            "path": str(self.path),
            "quant": self.quant,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256[0] if len(self.sha256) == 1 else self.sha256,
            "shards": len(self.files),
            "architecture": self.architecture,
            "source": self.source,
            "repo": self.repo_id,
            "commit": self.commit,
            "file": self.hub_file,
            "added_at": self.added_at,
            "present": self.present,
        }


@dataclass
class ImportProgress:
    """One step of an import: bytes hashed so far; ``model`` is set when it is done."""

    bytes_done: int
    bytes_total: int
    state: str  # "hashing", "checking", "done", "cancelled"
    model: LibraryModel | None = None


def safe_join(root: Path, *names: str) -> Path:
    """``root/name/...``, refusing any name that could land elsewhere on some OS: absolute paths,
    drive letters and other colons (NTFS streams), backslashes, ``..``, and Windows device names."""
    for name in names:
        parts = name.split("/")
        bad = (
            not name
            or "\\" in name
            or ":" in name
            or "\x00" in name
            or name.startswith("/")
            or any(part in ("", ".", "..") for part in parts)
            or any(part.split(".")[0].upper() in _DEVICE_NAMES for part in parts)
        )
        if bad:
            raise UnsafeNameError(
                f"refused the file name {name!r}: it would leave the library folder"
            )
    target = root.joinpath(*names).resolve()
    if not target.is_relative_to(root.resolve()):
        raise UnsafeNameError(f"refused {'/'.join(names)!r}: it would leave the library folder")
    return target


def hash_into(
    h: hashlib._Hash,
    path: Path,
    limit: int | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[int]:
    """Feed the first ``limit`` bytes of ``path`` into ``h``; yields bytes hashed so far."""
    done = 0
    with path.open("rb") as f:
        while limit is None or done < limit:
            if cancel is not None and cancel.is_set():
                return
            want = _BLOCK if limit is None else min(_BLOCK, limit - done)
            block = f.read(want)
            if not block:
                break
            h.update(block)
            done += len(block)
            yield done


def default_folder() -> Path:
    """The library folder from the user's settings (the per-OS default when unset)."""
    return settings.load().library_path()


class Library:
    """The local models: the library folder plus the ``library_models`` table of the app database."""

    def __init__(self, folder: Path | None = None, db_path: Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_folder()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.db_path = Path(db_path) if db_path is not None else paths.database_path()
        with self._db() as db:
            db.execute(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        # One short-lived connection per operation: callers may be on any thread.
        db = sqlite3.connect(self.db_path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    # -- reading --------------------------------------------------------------------------------
    def list(self) -> list[LibraryModel]:
        with self._db() as db:
            rows = db.execute("SELECT * FROM library_models ORDER BY added_at, id").fetchall()
        return [_row_model(r) for r in rows]

    def get(self, key: int | str | Path) -> LibraryModel:
        """A model by id, path, file name, or ``repo`` (when that repo has one model)."""
        models = self.list()
        text = str(key)
        for m in models:
            if text in (str(m.id), str(m.path), m.name):
                return m
        by_repo = [m for m in models if m.repo_id == text]
        if len(by_repo) == 1:
            return by_repo[0]
        if by_repo:
            names = ", ".join(m.name for m in by_repo)
            raise LibraryError(f"{text} has several models in the library: name one of {names}")
        raise LibraryError(f"no model {text!r} in the library")

    def find_hub(self, repo_id: str, hub_file: str) -> LibraryModel | None:
        for m in self.list():
            if m.repo_id == repo_id and m.hub_file == hub_file and m.present:
                return m
        return None

    def hub_folder(self, repo_id: str) -> Path:
        """Where a repo's files go: ``<library>/<owner>/<name>`` (names checked)."""
        return safe_join(self.folder, *repo_id.split("/"))

    # -- changing -------------------------------------------------------------------------------
    def add(
        self,
        files: builtins.list[Path],
        sha256: builtins.list[str],
        *,
        source: str,
        repo_id: str | None = None,
        commit: str | None = None,
        hub_file: str | None = None,
    ) -> LibraryModel:
        """Record verified files (the first one is what loads); the quant comes from the header."""
        spec = gguf_header.read_spec(files[0])
        size = sum(p.stat().st_size for p in files)
        added = datetime.now(timezone.utc).isoformat(timespec="seconds")
        row = (
            str(files[0]),
            json.dumps([str(p) for p in files]),
            json.dumps(sha256),
            size,
            spec.quant,
            spec.architecture,
            source,
            repo_id,
            commit,
            hub_file,
            added,
        )
        with self._db() as db:
            db.execute("DELETE FROM library_models WHERE path = ?", (str(files[0]),))
            db.execute(
                "INSERT INTO library_models (path, files, sha256, size_bytes, quant, architecture,"
                " source, repo_id, commit_sha, hub_file, added_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        return self.get(files[0])

    def remove(
        self, model: LibraryModel, *, delete_files: bool | None = None
    ) -> builtins.list[Path]:
        """Forget ``model``; delete its files when they live in the library folder (the default)
        or when ``delete_files`` is True.  Returns the files deleted."""
        inside = all(p.resolve().is_relative_to(self.folder.resolve()) for p in model.files)
        deleted = []
        if delete_files if delete_files is not None else inside:
            for p in model.files:
                if p.exists():
                    p.unlink()
                    deleted.append(p)
            _prune_empty(model.path.parent, self.folder)
        with self._db() as db:
            db.execute("DELETE FROM library_models WHERE id = ?", (model.id,))
        return deleted

    def import_file(
        self, path: Path, *, cancel: threading.Event | None = None
    ) -> Iterator[ImportProgress]:
        """Add a .gguf already on disk (kept where it is): header checked, every file hashed.

        A split model is imported whole from any of its shards."""
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise LibraryError(f"{path} does not exist or is not a file")
        files = [Path(p) for p in gguf_header.shard_urls(str(path))]
        missing = [p.name for p in files if not p.is_file()]
        if missing:
            raise LibraryError(
                f"{path.name} is split, but shards are missing: {', '.join(missing)}"
            )
        # GGUFError for anything llama.cpp would refuse (gguf_header applies its rules), checked
        # before a single byte is hashed; a split model is checked shard by shard and as a whole.
        specs = [gguf_header.read_local(p) for p in files]
        if len(specs) > 1:
            gguf_header.merge_shards(specs)
        total = sum(p.stat().st_size for p in files)
        yield ImportProgress(0, total, "hashing")
        shas, before = [], 0
        for p in files:
            h = hashlib.sha256()
            done = 0
            for done in hash_into(h, p, cancel=cancel):
                yield ImportProgress(before + done, total, "hashing")
            if cancel is not None and cancel.is_set():
                yield ImportProgress(before + done, total, "cancelled")
                return
            before += p.stat().st_size
            shas.append(h.hexdigest())
        yield ImportProgress(total, total, "checking")
        model = self.add(files, shas, source="import", hub_file=files[0].name)
        yield ImportProgress(total, total, "done", model)


def _row_model(r: sqlite3.Row) -> LibraryModel:
    return LibraryModel(
        id=r["id"],
        path=Path(r["path"]),
        files=[Path(p) for p in json.loads(r["files"])],
        sha256=list(json.loads(r["sha256"])),
        size_bytes=r["size_bytes"],
        quant=r["quant"],
        architecture=r["architecture"],
        source=r["source"],
        repo_id=r["repo_id"],
        commit=r["commit_sha"],
        hub_file=r["hub_file"],
        added_at=r["added_at"],
    )


def _prune_empty(folder: Path, stop: Path) -> None:
    """Remove now-empty repo folders up to (not including) the library folder."""
    folder, stop = folder.resolve(), stop.resolve()
    while folder != stop and folder.is_relative_to(stop):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def fsync_dir(folder: Path) -> None:
    """Make a rename durable (a no-op where directories cannot be opened, as on Windows)."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
