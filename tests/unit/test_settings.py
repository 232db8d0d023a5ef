"""Settings: defaults, round trip, validation, and a damaged file that loses nothing."""

from __future__ import annotations

import json
import os
import stat

import pytest

from app.core import paths
from app.core.engine.protocol import Sampling
from app.core.settings import Settings


def test_defaults_when_no_file():
    s = Settings.load()
    assert s == Settings()
    assert s.problems == []
    assert s.theme == "system"
    assert s.library_path() == paths.default_library_dir()
    assert s.threads() is None


def test_round_trip(tmp_path):
    s = Settings.load()
    s.set("n_threads", 3)
    s.set("default_n_ctx", 8192)
    s.set("hub_token", "hf_secret")
    s.set("offline", True)
    s.set("theme", "dark")
    s.set("library_dir", str(tmp_path / "lib"))
    where = s.save()
    assert where == paths.settings_path()
    again = Settings.load()
    assert again == s
    assert again.library_path() == tmp_path / "lib" and (tmp_path / "lib").is_dir()
    assert again.threads() == 3
    if os.name == "posix":
        assert stat.S_IMODE(where.stat().st_mode) == 0o600
    assert again.as_public_dict()["hub_token"] == "***"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n_threads", -1),
        ("n_threads", "four"),
        ("theme", "neon"),
        ("offline", "yes"),
        ("top_p", 1.5),
        ("default_n_ctx", 12.5),
        ("unknown_knob", 1),
    ],
)
def test_set_rejects_bad_values_and_changes_nothing(name, value):
    s = Settings()
    with pytest.raises(ValueError, match=name):
        s.set(name, value)
    assert s == Settings()


def test_bad_values_in_file_fall_back_to_defaults_with_a_problem():
    paths.settings_path().write_text(
        json.dumps({"n_threads": "many", "theme": "dark", "future_key": [1, 2]})
    )
    s = Settings.load()
    assert s.theme == "dark"
    assert s.n_threads == 0
    assert any("n_threads" in p for p in s.problems)
    s.save()
    # a key written by a newer version survives a save by this one
    assert json.loads(paths.settings_path().read_text())["future_key"] == [1, 2]


def test_corrupt_file_is_kept_aside_not_lost():
    target = paths.settings_path()
    target.write_text("{not json")
    s = Settings.load()
    assert s == Settings()
    assert "not valid JSON" in s.problems[0]
    assert target.with_name("settings.json.bad").read_text() == "{not json"


def test_sampling_and_presets():
    s = Settings()
    s.apply_preset("creative")
    assert s.temperature == Sampling.preset("creative").temperature
    s.seed = 7
    assert s.sampling() == Sampling.preset("creative").__class__(
        temperature=1.0, top_k=100, top_p=0.98, min_p=0.02, repeat_penalty=1.1, seed=7
    )
    s.seed = -1
    assert 0 <= s.sampling().seed < 2**31


def test_other_modules_read_settings_through_the_module_load(monkeypatch, tmp_path):
    from app.core import hub, library, settings

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    s = settings.load()
    assert not hub.offline_mode()
    s.set("hub_token", "hf_from_settings")
    s.set("offline", True)
    s.set("library_dir", str(tmp_path / "lib"))
    s.save()
    assert hub.user_token() == "hf_from_settings"
    assert hub.offline_mode()
    assert library.default_folder() == tmp_path / "lib"
