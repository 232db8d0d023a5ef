"""Fixtures of the server tests: a real Library of tiny generated models and a running server.

The server listens on 127.0.0.1 on a free port and is driven with the official ``openai`` client.
Engines run with one thread (two would spin against each other on a shared CI core); every server is stopped (and its engines with it) after its test,
which the shared leak check verifies.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.core.dryrun import DryRunner
from app.core.engine import Engine
from app.core.library import Library
from app.core.planning import Planner
from app.server.config import ServerOptions
from app.server.runner import LocalServer
from tests import modelfactory

QUANTS = ("Q8_0", "Q4_K_M", "Q2_K")


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    """One dry-run engine for the module's planners (started first: the leak check allows it)."""
    folder = tmp_path_factory.mktemp("dryrun")
    engine = Engine(log_dir=folder / "logs")
    engine.start()
    r = DryRunner(engine=engine, cache_path=folder / "cache.json")
    yield r
    engine.close()


@pytest.fixture(scope="module")
def tiny_files() -> dict[str, Path]:
    return {q: Path(modelfactory.model_path(q, modelfactory.TINY)) for q in QUANTS}


@pytest.fixture
def library(quantdesk_home, tiny_files) -> Library:
    """A real Library in this test's QUANTDESK_HOME holding the tiny model at three quants."""
    lib = Library(folder=quantdesk_home / "models")
    for path in tiny_files.values():
        for _ in lib.import_file(path):
            pass
    return lib


@pytest.fixture
def planner(runner) -> Iterator[Planner]:
    with Planner(runner=runner) as p:
        yield p


@pytest.fixture
def start_server(planner, library, tmp_path) -> Iterator[Callable[..., LocalServer]]:
    """Start a server on a free loopback port with these options; all are stopped afterwards."""
    servers: list[LocalServer] = []

    def start(**options: object) -> LocalServer:
        values: dict = {"port": 0, "n_threads": 1, "idle_ttl_s": 0, **options}
        opts = ServerOptions(**values)
        server = LocalServer(opts, planner, library, log_dir=tmp_path / "logs")
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server) -> LocalServer:
    return start_server()


@pytest.fixture
def client(server):
    from openai import OpenAI

    with OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def name_of(path: Path) -> str:
    return os.path.basename(path)


def http(method: str, url: str, data: bytes | None = None) -> tuple[int, dict]:
    """A plain HTTP request (stdlib): status and JSON body, errors included."""
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def embed_file(tmp_path_factory) -> Path:
    """The tiny llama with a mean-pooling layer declared (``llama.pooling_type``): it embeds."""
    import gguf
    import numpy as np

    from app.core.synthetic_model import add_llama_metadata, llama_tensor_shapes

    shape = modelfactory.ModelShape(name="quantdesk-embed")
    path = tmp_path_factory.mktemp("embed") / "quantdesk-embed-F16.gguf"
    rng = np.random.default_rng(shape.seed)
    w = gguf.GGUFWriter(str(path), "llama")
    add_llama_metadata(w, shape, int(gguf.LlamaFileType.MOSTLY_F16), shape.chat_template)
    w.add_pooling_type(gguf.PoolingType.MEAN)
    for name, dims in llama_tensor_shapes(shape):
        if len(dims) == 2:
            std = shape.weight_std * (256 / dims[1]) ** 0.5
            w.add_tensor(name, (rng.standard_normal(dims) * std).astype(np.float16))
        else:
            w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(dims[0])).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
