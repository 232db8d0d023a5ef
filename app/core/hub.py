"""The Hugging Face Hub catalog: search GGUF repos and list a repo's variants.

Built on huggingface_hub's ``HfApi``.  The endpoint comes from ``HF_ENDPOINT`` and offline mode from
``HF_HUB_OFFLINE``, both read at call time (huggingface_hub reads them once, at import), so a test or
the settings page can change them while the app runs.  Every failure becomes a :class:`HubError`
whose ``kind`` the GUI can branch on ("offline", "not_found", "gated", "auth", "server",
"network", "refused") and whose message a person can act on.

A variant is one downloadable model: a single ``.gguf`` file, or the shards
``Name-00001-of-0000N.gguf`` grouped together.  Its quant label is parsed from the file name and
marked unconfirmed; the library confirms it from the header's ``general.file_type`` after download.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
from huggingface_hub import HfApi, constants, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, validate_repo_id

import app
from app.core import paths, settings
from app.core.errors import ErrorKind, QuantDeskError

DEFAULT_ENDPOINT = "https://huggingface.co"
_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
# Quant labels as llama.cpp's quantizer and the big GGUF publishers spell them in file names.
_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Z0-9]{1,3})*|BF16|F16|FP16|F32|MXFP4(?:_MOE)?|TQ\d_\d)"
    r"(?![A-Za-z0-9])",
    re.IGNORECASE,
)


class HubError(QuantDeskError):
    """A Hub operation failed; ``kind`` classifies it, the message explains it."""

    default_kind = ErrorKind.NETWORK


class OfflineError(HubError):
    """The Hub cannot be reached (offline mode on, or no connection): work from the library."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "offline")


@dataclass(frozen=True)
class RepoSummary:
    """One search hit or catalog entry."""

    repo_id: str
    downloads: int = 0
    likes: int = 0
    gated: bool = False
    last_modified: str = ""
    params_b: float | None = None  # parameters in billions (catalog entries only)
    publisher: str = ""
    summary: str = ""


@dataclass(frozen=True)
class HubFile:
    """One file of a variant as the Hub lists it (LFS size and sha256)."""

    name: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class Variant:
    """A downloadable model of a repo: one file, or all shards of a split model, at one commit."""

    repo_id: str
    commit: str
    quant: str  # parsed from the file name; "unknown" when the name says nothing
    files: tuple[HubFile, ...]
    quant_confirmed: bool = False  # True once read from the GGUF header

    @property
    def file(self) -> str:
        """The name to load: the file itself, or the first shard (llama.cpp finds the rest)."""
        return self.files[0].name

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def shards(self) -> int:
        return len(self.files)

    def as_json(self) -> dict[str, Any]:
        """The ``quantdesk variants --json`` record (sha256 is a list for split models)."""
        shas = [f.sha256 for f in self.files]
        return {
            "file": self.file,
            "quant": self.quant,
            "quant_confirmed": self.quant_confirmed,
            "size_bytes": self.size_bytes,
            "sha256": shas[0] if len(shas) == 1 else shas,
            "shards": self.shards,
            "files": [
                {"file": f.name, "size_bytes": f.size, "sha256": f.sha256} for f in self.files
            ],
            "repo": self.repo_id,
            "commit": self.commit,
        }


# -- configuration read at call time ---------------------------------------------------------------
def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    """Offline when ``HF_HUB_OFFLINE`` says so or the user switched it on in Settings."""
    value = os.environ.get("HF_HUB_OFFLINE", "")
    if value.upper() in {"1", "ON", "YES", "TRUE"} or constants.is_offline_mode():
        return True
    return settings.load().offline


def user_token() -> str | None:
    """The Hub token from the user's settings, else ``HF_TOKEN`` (huggingface_hub's own rule)."""
    return settings.load().hub_token or os.environ.get("HF_TOKEN") or None


def request_headers(token: str | None = None) -> dict[str, str]:
    """Headers for a file request: user agent and, when there is one, the token."""
    return build_hf_headers(
        token=token or user_token() or False,
        library_name="quantdesk",
        library_version=app.__version__,
    )


def file_url(repo_id: str, filename: str, revision: str) -> str:
    return hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint())


def api(token: str | None = None) -> HfApi:
    return HfApi(
        endpoint=endpoint(),
        token=token or user_token() or False,
        library_name="quantdesk",
        library_version=app.__version__,
    )


# -- errors ---------------------------------------------------------------------------------------
def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a well-formed ``owner/name``, else a HubError saying what is wrong."""
    text = repo_id.strip() if isinstance(repo_id, str) else ""
    try:
        validate_repo_id(text)
    except HFValidationError as exc:
        detail = str(exc).split("\n", 1)[0]
        raise HubError(
            f"{repo_id!r} is not a Hub repo id: it must look like owner/name (letters, digits, "
            f"'-', '_', '.'; at most 96 characters). {detail}",
            ErrorKind.REQUEST,
        ) from None
    if text.count("/") != 1:
        raise HubError(
            f"{repo_id!r} is not a Hub repo id: it must look like owner/name", ErrorKind.REQUEST
        )
    return text


@contextmanager
def hub_errors(repo_id: str = "", filename: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub and transport exceptions into :class:`HubError` with plain words."""
    if offline_mode():
        raise OfflineError("offline mode is on (Settings or HF_HUB_OFFLINE): only local models")
    what = f"{repo_id}/{filename}" if filename else repo_id
    try:
        yield
    except HFValidationError as exc:
        raise HubError(
            f"{what!r} is not a valid Hub name: {str(exc).splitlines()[0]}", ErrorKind.REQUEST
        ) from exc
    except OfflineModeIsEnabled as exc:
        raise OfflineError("offline mode is on: showing only local models") from exc
    except GatedRepoError as exc:
        raise HubError(
            f"{repo_id} is gated: accept its terms on the Hub website, then set your Hub token "
            "(Settings, or the HF_TOKEN environment variable)",
            "gated",
        ) from exc
    except RevisionNotFoundError as exc:
        raise HubError(f"{repo_id} has no such revision", "not_found") from exc
    except EntryNotFoundError as exc:
        raise HubError(f"{what} does not exist in the repo", "not_found") from exc
    except RepositoryNotFoundError as exc:
        raise HubError(
            f"{repo_id} does not exist on {endpoint()} (or it is private: set your Hub token)",
            "not_found",
        ) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        raise http_status_error(status, what) from exc
    except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
        raise OfflineError(f"cannot reach {endpoint()}: {exc}. You are offline?") from exc
    except httpx2.TransportError as exc:
        raise HubError(f"the connection to {endpoint()} failed: {exc}", "network") from exc


def http_status_error(status: int, what: str) -> HubError:
    """A HubError for an HTTP status that was not translated from an X-Error-Code."""
    if status in (401, 403):
        return HubError(f"access to {what} was refused ({status}): check your Hub token", "auth")
    if status == 404:
        return HubError(f"{what} was not found on {endpoint()}", "not_found")
    if status == 429:
        return HubError("the Hub is rate-limiting requests (429): try again in a minute", "server")
    if status >= 500:
        return HubError(f"the Hub answered {status} (a server error): try again later", "server")
    return HubError(f"the Hub answered {status} for {what}", "network")


# -- names ----------------------------------------------------------------------------------------
def parse_quant(filename: str) -> str:
    """The quant label a file name carries (``model.q8_0.gguf`` -> ``Q8_0``), else "unknown"."""
    base = filename.rsplit("/", 1)[-1]
    base = _SHARD_RE.sub(".gguf", base)
    found = _QUANT_RE.findall(base)
    if not found:
        return "unknown"
    label = found[-1].upper()
    return "F16" if label == "FP16" else label


def shard_position(filename: str) -> tuple[int, int] | None:
    """``(index, count)`` for ``X-00002-of-00003.gguf``, None for an unsplit file."""
    m = _SHARD_RE.search(filename)
    return (int(m.group(1)), int(m.group(2))) if m else None


def group_variants(repo_id: str, commit: str, files: list[HubFile]) -> list[Variant]:
    """Group a repo's GGUF files into variants; incomplete shard sets are left out."""
    singles: list[Variant] = []
    groups: dict[tuple[str, int], dict[int, HubFile]] = {}
    for f in files:
        base = f.name.rsplit("/", 1)[-1].lower()
        if not base.endswith(".gguf") or base.startswith("mmproj"):
            continue  # vision projectors are companions, not models one can run alone
        pos = shard_position(f.name)
        if pos is None:
            singles.append(Variant(repo_id, commit, parse_quant(f.name), (f,)))
        else:
            key = (_SHARD_RE.sub("", f.name), pos[1])
            groups.setdefault(key, {})[pos[0]] = f
    for (_, count), members in groups.items():
        if sorted(members) == list(range(1, count + 1)):
            ordered = tuple(members[i] for i in range(1, count + 1))
            singles.append(Variant(repo_id, commit, parse_quant(ordered[0].name), ordered))
    return sorted(singles, key=lambda v: (v.size_bytes, v.file))


# -- queries --------------------------------------------------------------------------------------
def search(text: str, *, limit: int = 30, token: str | None = None) -> list[RepoSummary]:
    """GGUF repos matching ``text``, most downloaded first."""
    with hub_errors(text):
        _probe()
        models = api(token).list_models(
            search=text or None, filter="gguf", sort="downloads", limit=limit
        )
        return [
            RepoSummary(
                repo_id=m.id,
                downloads=m.downloads or 0,
                likes=m.likes or 0,
                gated=bool(m.gated),
                last_modified=m.last_modified.isoformat() if m.last_modified else "",
            )
            for m in models
        ]


def _probe() -> None:
    """Fail fast when the Hub is unreachable: list_models retries connection errors for ~30 s."""
    from huggingface_hub import get_session

    get_session().head(endpoint(), timeout=httpx2.Timeout(10.0, connect=5.0))


def list_variants(
    repo_id: str, *, revision: str | None = None, token: str | None = None
) -> list[Variant]:
    """Every GGUF variant of ``repo_id`` with size and SHA-256, smallest first."""
    repo_id = check_repo_id(repo_id)
    with hub_errors(repo_id):
        info = api(token).model_info(repo_id, revision=revision, files_metadata=True)
    files = [
        HubFile(
            s.rfilename,
            (s.lfs.size if s.lfs else s.size) or 0,
            str(s.lfs.sha256).lower() if s.lfs and s.lfs.sha256 else None,
        )
        for s in info.siblings or []
    ]
    return group_variants(repo_id, info.sha or revision or "main", files)


def pick_variant(variants: list[Variant], quant_or_file: str) -> Variant:
    """The variant named by a file name (any shard) or a quant label (case-insensitive)."""
    wanted = quant_or_file.strip()
    for v in variants:
        if any(f.name == wanted or f.name.rsplit("/", 1)[-1] == wanted for f in v.files):
            return v
    matches = [v for v in variants if v.quant.upper() == wanted.upper()]
    if len(matches) == 1:
        return matches[0]
    repo = variants[0].repo_id if variants else "the repo"
    if matches:
        names = ", ".join(v.file for v in matches)
        raise HubError(f"{wanted} matches several files in {repo}: pick one of {names}", "refused")
    have = ", ".join(sorted({v.quant for v in variants})) or "none"
    raise HubError(f"{repo} has no {wanted} variant (it has: {have})", "not_found")


def catalog() -> list[RepoSummary]:
    """The curated starting list shipped in ``resources/catalog.json`` (works offline)."""
    data = json.loads((paths.resources_dir() / "catalog.json").read_text(encoding="utf-8"))
    return [
        RepoSummary(
            repo_id=entry["repo_id"],
            params_b=entry.get("params_b"),
            publisher=entry.get("publisher", ""),
            summary=entry.get("summary", ""),
            gated=bool(entry.get("gated", False)),
        )
        for entry in data["models"]
    ]
