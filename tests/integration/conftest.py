"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest

from app.core.dryrun import DryRunner
from app.core.engine import Engine
from app.core.planning import Planner


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    """One engine child serving every dry run of a test module, with its own result cache."""
    folder = tmp_path_factory.mktemp("dryrun")
    engine = Engine(log_dir=folder / "logs")
    engine.start()  # before the first test: the leak check sees it as pre-existing
    r = DryRunner(engine=engine, cache_path=folder / "cache.json")
    yield r
    engine.close()


@pytest.fixture
def planner(runner):
    """The core planner over the module's dry-run engine (this machine's hardware profile)."""
    with Planner(runner=runner) as p:
        yield p
