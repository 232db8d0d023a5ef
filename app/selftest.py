"""``quantdesk --self-test``: check, without a screen, that this install or bundle can run a model.

Used on a freshly built bundle (``packaging/build.py`` and the packaging test run it) and by people
whose app does not start.  It imports every QuantDesk module -- a bundle that missed one (a page
imported lazily, a command module) fails here instead of in front of a user -- then writes a tiny
generated model to a temporary folder, loads it in the engine process, generates a few tokens
through the model's chat template, and prints ``OK``.  Nothing is written to the user's folders.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import tempfile
import time
from pathlib import Path

import app

_TOKENS = 8


def _import_all() -> list[str]:
    """Import every module of the app package; returns 'module: error' lines for the failures."""
    failures = []
    names = [m.name for m in pkgutil.walk_packages(app.__path__, "app.")]
    # The engine's child-side modules may import llama_cpp, which this (parent) process never does.
    names = [n for n in names if not n.startswith("app.core.engine.host")]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # report them all, not just the first
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    return failures + ([] if names else ["no modules found in the app package"])


def run_self_test() -> int:
    """Run the checks, print what happened, return the exit code (0 when everything worked)."""
    from app.core.engine import Engine, EngineError, GenerationStats, Sampling
    from app.core.synthetic_model import ModelShape, write_f16_model

    print(
        f"{app.APP_NAME} {app.__version__} self-test ({sys.platform}, Python {sys.version.split()[0]})"
    )
    failures = _import_all()
    if failures:
        print("FAILED: some modules do not import:\n  " + "\n  ".join(failures))
        return 1
    with tempfile.TemporaryDirectory(prefix="quantdesk-selftest-") as tmp:
        model = write_f16_model(Path(tmp) / "selftest-F16.gguf", ModelShape(name="selftest"))
        t0 = time.perf_counter()
        try:
            with Engine(log_dir=Path(tmp)) as engine:
                engine.load(model, n_ctx=256)
                messages = [{"role": "user", "content": "Say hello."}]
                stats = None
                for item in engine.chat(messages, max_tokens=_TOKENS, sampling=Sampling(seed=1)):
                    if isinstance(item, GenerationStats):
                        stats = item
        except EngineError as exc:
            print(f"FAILED: the engine could not run the test model: {exc}")
            return 1
    if stats is None or stats.tokens == 0:
        print("FAILED: the engine loaded the test model but generated no tokens")
        return 1
    print(
        f"engine: loaded a generated model and generated {stats.tokens} tokens "
        f"({stats.gen_tok_s:.0f} tok/s) in {time.perf_counter() - t0:.1f} s"
    )
    print("OK")
    return 0
