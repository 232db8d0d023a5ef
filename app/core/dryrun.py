"""Parent side of llama.cpp dry runs: header-only files, one engine child, a cache of results.

A plan must not cost a model load.  A dry run (``host_dryrun``) needs only the header, so for a
remote variant the header read over HTTP Range is written to a *sparse* file in the cache folder --
the header bytes, then a hole up to the full size -- and llama.cpp plans on that.  One engine child
serves every dry run of a :class:`DryRunner`; results are cached, in memory and on disk, by
(header digest, llama.cpp version, n_ctx, n_gpu_layers, memory settings).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import asdict, astuple
from importlib import metadata
from pathlib import Path
from typing import Any

from app.core import paths
from app.core.engine.protocol import DryRunRequest, MemorySettings
from app.core.fit import DryRun, DryRunFn
from app.core.gguf_header import GGUFError, ModelSpec, read_url, shard_urls
from app.core.llama_log import CacheInfo

_CACHE_FILE = "dryrun-cache.json"
_FORMAT = 5  # bump when DryRun changes: old cache entries are then ignored
_CACHE_MAX = 4000


def _llama_version() -> str:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "unknown"


def write_sparse(spec: ModelSpec, folder: Path, name: str) -> Path:
    """A file holding ``spec.raw_header`` followed by a hole up to the size the tensors need."""
    if not spec.raw_header:
        raise GGUFError("the header bytes were not kept; read the model with read_url")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    size = spec.data_offset + max((t.offset + t.nbytes for t in spec.tensors), default=0)
    if path.exists() and path.stat().st_size == size:
        return path
    tmp = path.with_suffix(".part")
    with tmp.open("wb") as f:
        f.write(spec.raw_header)
        f.truncate(size)  # a hole: no disk blocks, reads as zeros, never read by a dry run
    tmp.replace(path)
    return path


class DryRunner:
    """Runs (and caches) dry runs in one engine child; thread-safe, close() when done."""

    def __init__(self, engine: Any = None, cache_path: Path | None = None) -> None:
        self._engine = engine
        self._own_engine = engine is None
        self._lock = threading.Lock()
        self._cache_path = cache_path or paths.cache_dir() / _CACHE_FILE
        self._cache: dict[str, dict[str, Any]] = self._load_cache()
        self._version = _llama_version()
        self.runs = 0  # dry runs actually executed (cache misses), for tests and benchmarks

    # ---- cache ------------------------------------------------------------------------
    def _load_cache(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self._cache_path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_cache(self) -> None:
        items = list(self._cache.items())[-_CACHE_MAX:]
        tmp = self._cache_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(dict(items)))
            tmp.replace(self._cache_path)
        except OSError:
            pass  # a cache that cannot be written costs only time

    # ---- sources ----------------------------------------------------------------------
    def prepare(
        self,
        source: str | Path,
        spec: ModelSpec | None = None,
        headers: dict[str, str] | None = None,
        reader: Callable[[str], ModelSpec] | None = None,
    ) -> tuple[Path, str]:
        """A local path llama.cpp can open for ``source`` and the digest of its header.

        ``reader`` reads one shard's header by URL (the planner passes its cache, so a split model's
        shards are read once, not on every plan).
        """
        text = str(source)
        if text.startswith(("http://", "https://")):
            urls = shard_urls(text)
            read = reader or (lambda u: read_url(u, headers=headers))
            specs = [spec] if spec is not None and len(urls) == 1 and spec.raw_header else None
            specs = specs or [read(u) for u in urls]
            digest = _digest(b"".join(s.raw_header for s in specs))
            folder = paths.cache_dir() / "headers" / digest[:16]
            paths_ = [
                write_sparse(s, folder, u.rsplit("/", 1)[-1].split("?")[0])
                for s, u in zip(specs, urls, strict=True)
            ]
            return paths_[0], digest
        path = Path(text)
        end = spec.data_offset if spec is not None else 0
        try:
            with path.open("rb") as f:
                head = f.read(end or 1 << 20)
        except OSError as exc:
            raise GGUFError(f"cannot open {path}: {exc.strerror or exc}") from exc
        stat = path.stat()
        return path, _digest(head + f"{stat.st_size}".encode())

    # ---- runs ---------------------------------------------------------------------------
    def run(
        self,
        path: Path,
        digest: str,
        n_ctx: int,
        n_gpu_layers: int = 0,
        settings: MemorySettings | None = None,
    ) -> DryRun:
        m = (settings or MemorySettings()).memory()
        # Every memory setting is part of the key, so a new one cannot be left out of it.
        key = "|".join(map(str, (_FORMAT, digest, self._version, n_ctx, n_gpu_layers, *astuple(m))))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                return _from_json(hit)
            if self._engine is None:
                from app.core.engine.client import Engine

                self._engine = Engine()
            req = DryRunRequest(path=str(path), n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, memory=m)
            result: DryRun = self._engine.request(req, timeout=300)
            self.runs += 1
            if not result.compute:
                raise GGUFError(f"llama.cpp's dry run of {path.name} reported no compute buffer")
            self._cache[key] = asdict(result)
            self._save_cache()
            return result

    def dry_fn(
        self,
        source: str | Path,
        spec: ModelSpec,
        gpu_build: bool = False,
        headers: dict[str, str] | None = None,
        reader: Callable[[str], ModelSpec] | None = None,
        settings: MemorySettings | None = None,
    ) -> DryRunFn:
        """A ``(n_ctx, n_gpu_layers) -> DryRun`` for the planner.

        On a build without a GPU backend the offload does not change what llama.cpp reserves, so
        one dry run per context serves every ``n_gpu_layers`` (fit.py estimates the GPU side).
        """
        path, digest = self.prepare(source, spec, headers, reader)

        def fn(n_ctx: int, n_gpu_layers: int) -> DryRun:
            ngl = n_gpu_layers if gpu_build else 0
            return self.run(path, digest, n_ctx, ngl, settings)

        return fn

    def close(self) -> None:
        # An engine given by the caller is the caller's to close; keeping it means a later dry
        # run does not start (and leak) a child of its own.
        if self._engine is not None and self._own_engine:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> DryRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _from_json(data: dict[str, Any]) -> DryRun:
    data = dict(data)
    data["extra_buffers"] = tuple(data.get("extra_buffers", ()))
    data["cpu_features"] = tuple(data.get("cpu_features", ()))
    data["swa_layers"] = tuple(data.get("swa_layers", ()))
    data["caches"] = tuple(
        CacheInfo(c["kind"], c["nbytes"], c["cells"], tuple(c["layers"]), tuple(c["devices"]))
        for c in data.get("caches", ())
    )
    return DryRun(**data)
