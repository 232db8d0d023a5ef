"""User settings: one declared schema with defaults, stored as JSON at ``paths.settings_path()``.

Usage::

    s = Settings.load()          # defaults for anything missing or invalid
    s.n_threads = 4
    s.save()
    s.library_path()             # the library folder as a Path (the default one when unset)
    s.sampling()                 # the engine's Sampling from the stored preset and knobs

Every field is declared once in :class:`Settings` (a dataclass: the type and default are the
schema).  A value of the wrong type or out of range is replaced by its default and described in
``Settings.problems``; a file that is not JSON at all is kept aside as ``settings.json.bad`` so the
user's text is never lost.  Unknown keys (written by a newer version) are kept on save.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from app.core import paths
from app.core.engine.protocol import Sampling

THEMES = ("system", "light", "dark")
PRESETS = ("precise", "balanced", "creative")

# Allowed ranges of the numeric settings (inclusive); None = no bound on that side.
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "n_threads": (0, 1024),
    "default_n_ctx": (256, 1 << 21),
    "max_tokens": (1, 1 << 20),
    "temperature": (0.0, 5.0),
    "top_k": (0, 100000),
    "top_p": (0.0, 1.0),
    "min_p": (0.0, 1.0),
    "repeat_penalty": (0.0, 10.0),
    "seed": (-1, 2**31 - 1),
    "server_port": (1, 65535),
    "server_idle_ttl_s": (0, 7 * 86400),
    "min_tokens_per_s": (0.0, 100000.0),
    "n_ubatch": (32, 8192),
}
FLASH_ATTN = ("auto", "on", "off")
_CHOICES: dict[str, tuple[str, ...]] = {
    "theme": THEMES,
    "sampling_preset": PRESETS + ("custom",),
    "flash_attn": FLASH_ATTN,
}


@dataclass
class Settings:
    """The user's settings (see the module docstring for the rules)."""

    library_dir: str = ""  # empty: paths.default_library_dir()
    n_threads: int = 0  # 0: let llama.cpp choose
    default_n_ctx: int = 4096
    min_tokens_per_s: float = 10.0  # the recommendation's speed floor (app.core.speed.SpeedRule)
    hub_token: str = ""
    offline: bool = False
    theme: str = "system"  # follows the OS unless the user picks light or dark
    system_prompt: str = ""
    max_tokens: int = 1024
    sampling_preset: str = "balanced"  # "custom" once a knob differs from the preset
    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int = -1  # -1: a new random seed per reply
    workers: str = ""  # RPC workers, "host:port,host:port" (app.core.rpc), in the order layers go
    server_port: int = 8080  # the local server (Server page, `quantdesk serve`)
    server_idle_ttl_s: int = 600  # unload a model the server has not used for this long; 0: never
    # Memory settings every plan and load follows (app.core.planning.PlanOptions):
    swa_full: bool = (
        False  # window-only sliding-window cache (llama-server's default): least memory
    )
    flash_attn: str = "auto"  # auto: llama.cpp's own choice (on wherever the backend runs it)
    n_ubatch: int = 512  # llama.cpp's physical batch: the compute buffer grows with it
    problems: list[str] = field(default_factory=list, compare=False, repr=False)
    _extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # ---- schema -------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        """The stored settings, in declaration order."""
        return [f.name for f in fields(cls) if not f.name.startswith("_") and f.name != "problems"]

    @classmethod
    def defaults(cls) -> Settings:
        return cls()

    @classmethod
    def validate(cls, name: str, value: Any) -> Any:
        """``value`` converted to the field's type, or ValueError with a message in words."""
        default = getattr(cls(), name)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, not {value!r}")
            return value
        if isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, not {value!r}")
            if isinstance(default, int) and not float(value).is_integer():
                raise ValueError(f"{name} must be a whole number, not {value!r}")
            value = type(default)(value)
            low, high = _RANGES.get(name, (None, None))
            if (low is not None and value < low) or (high is not None and value > high):
                raise ValueError(f"{name} must be between {low} and {high}, not {value}")
            return value
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text, not {value!r}")
        if name == "workers":
            from app.core.rpc import WorkerError, parse_workers

            try:
                return ",".join(parse_workers(value))
            except WorkerError as exc:
                raise ValueError(str(exc)) from None
        choices = _CHOICES.get(name)
        if choices and value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        return value

    def set(self, name: str, value: Any) -> None:
        """Validate and assign one setting (ValueError when invalid; nothing changes then)."""
        if name not in self.field_names():
            raise ValueError(f"unknown setting {name!r}")
        setattr(self, name, self.validate(name, value))

    # ---- storage ------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | None = None) -> Settings:
        """Read the settings file; missing file -> defaults; bad values -> defaults + problems."""
        path = path or paths.settings_path()
        settings = cls()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return settings
        except OSError as exc:
            settings.problems.append(f"Could not read {path}: {exc}. Using the defaults.")
            return settings
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("the top level is not an object")
        except ValueError as exc:
            backup = path.with_name(path.name + ".bad")
            try:
                path.replace(backup)
                kept = f" It was kept as {backup}."
            except OSError:
                kept = ""
            settings.problems.append(
                f"The settings file {path} is not valid JSON ({exc}); using the defaults.{kept}"
            )
            return settings
        known = set(cls.field_names())
        for name, value in data.items():
            if name not in known:
                settings._extra[name] = value
                continue
            try:
                setattr(settings, name, cls.validate(name, value))
            except ValueError as exc:
                settings.problems.append(f"{exc}; using the default ({getattr(cls(), name)!r}).")
        return settings

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.field_names()}
        return {**self._extra, **data}

    def save(self, path: Path | None = None) -> Path:
        """Write atomically (temp file + rename), readable by the user only (it holds a token)."""
        path = path or paths.settings_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_dict(), fh, indent=2, sort_keys=True)
                fh.write("\n")
            if os.name == "posix":
                os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    # ---- derived values -------------------------------------------------------------------
    def library_path(self) -> Path:
        """The library folder (created when missing)."""
        if not self.library_dir:
            return paths.default_library_dir()
        path = Path(self.library_dir).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def threads(self) -> int | None:
        """Threads for llama.cpp, or None to let it choose."""
        return self.n_threads or None

    def sampling(self) -> Sampling:
        """The engine's sampling knobs from the stored values (a -1 seed becomes a random one)."""
        seed = self.seed if self.seed >= 0 else int.from_bytes(os.urandom(4), "little") >> 1
        return Sampling(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            seed=seed,
        )

    def apply_preset(self, name: str) -> None:
        """Copy a named preset's knobs into the settings."""
        preset = Sampling.preset(name)
        self.sampling_preset = self.validate("sampling_preset", name)
        for key in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty"):
            setattr(self, key, getattr(preset, key))

    def copy(self) -> Settings:
        return replace(self, problems=list(self.problems), _extra=dict(self._extra))

    def as_public_dict(self) -> dict[str, Any]:
        """The settings with the token masked (for logs and ``quantdesk`` output)."""
        data = asdict(self)
        data.pop("problems", None)
        data.pop("_extra", None)
        if data.get("hub_token"):
            data["hub_token"] = "***"
        return data


def load(path: Path | None = None) -> Settings:
    """Module-level shortcut for :meth:`Settings.load` (what other modules call)."""
    return Settings.load(path)
