"""Hub and library commands: ``search``, ``variants``, ``pull``, ``list``, ``rm``, ``import``.

``HF_ENDPOINT`` selects the Hub and ``HF_TOKEN`` (or the token in Settings) is sent when set.
JSON keys (``--json``): search -> [{repo, downloads, likes, gated}]; variants -> [{file, quant,
size_bytes, sha256, shards, files, repo, commit}] (sha256 is a list for split models); pull and
import -> the library record; list -> [library records] (see ``LibraryModel.as_json``).
"""

from __future__ import annotations

import argparse
import sys
import time

from app.cli.common import fail, human_bytes, print_json
from app.core import download, hub
from app.core.gguf_header import GGUFError
from app.core.hub import HubError
from app.core.library import Library, LibraryError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search the Hub for GGUF models (most downloaded first)")
    p.add_argument("text", nargs="?", default="", help="words in the repo name (empty: catalog)")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_search)

    p = sub.add_parser("variants", help="list a repo's GGUF variants: quant, size, SHA-256")
    p.add_argument("repo", help="repo id, for example bartowski/Qwen2.5-7B-Instruct-GGUF")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_variants)

    p = sub.add_parser("pull", help="download a variant into the library, verified and resumable")
    p.add_argument("repo")
    p.add_argument("variant", help="a quant (Q4_K_M) or a file name from `quantdesk variants`")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_pull)

    p = sub.add_parser("list", help="the models in the local library (works offline)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_list)

    p = sub.add_parser("rm", help="remove a model from the library (id, file name, path or repo)")
    p.add_argument("model")
    p.add_argument("--keep-files", action="store_true", help="forget it but leave the files")
    p.set_defaults(func=run_rm)

    p = sub.add_parser("import", help="add a .gguf file from disk to the library (hashed)")
    p.add_argument("path")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_import)


def run_search(args: argparse.Namespace) -> int:
    try:
        hits = hub.search(args.text, limit=args.limit) if args.text else hub.catalog()
    except HubError as exc:
        if exc.kind != "offline":
            return fail(str(exc))
        print(f"offline ({exc}); the curated catalog:", file=sys.stderr)
        hits = hub.catalog()
    if args.json:
        print_json(
            [
                {"repo": h.repo_id, "downloads": h.downloads, "likes": h.likes, "gated": h.gated}
                for h in hits
            ]
        )
        return 0
    for h in hits:
        extra = f"{h.params_b:g}B  {h.summary}" if h.params_b else f"{h.downloads:>10,} downloads"
        print(f"{h.repo_id:<55} {extra}{'  (gated)' if h.gated else ''}")
    return 0


def run_variants(args: argparse.Namespace) -> int:
    try:
        variants = hub.list_variants(args.repo)
    except HubError as exc:
        return fail(str(exc))
    if args.json:
        print_json([v.as_json() for v in variants])
        return 0
    if not variants:
        print(f"{args.repo} has no GGUF files")
    for v in variants:
        shards = f"  ({v.shards} shards)" if v.shards > 1 else ""
        print(f"{v.quant:<10} {human_bytes(v.size_bytes):>10}  {v.file}{shards}")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    bar = _Bar() if sys.stderr.isatty() and not args.json else None
    last = None
    try:
        for step in download.pull(args.repo, args.variant):
            last = step
            if bar is not None:
                bar.show(step)
            elif step.state == "retrying":
                print(step.message, file=sys.stderr)
    except KeyboardInterrupt:
        if bar is not None:
            bar.end()
        print("paused: run the same command again to resume", file=sys.stderr)
        return 130
    except (HubError, LibraryError, GGUFError) as exc:
        if bar is not None:
            bar.end()
        return fail(str(exc))
    if bar is not None:
        bar.end()
    if last is None or last.model is None:
        return fail(f"the download stopped ({last.state if last else 'no data'})")
    if args.json:
        print_json(last.model.as_json())
    else:
        print(last.model.path)
    return 0


def run_list(args: argparse.Namespace) -> int:
    models = Library().list()
    if args.json:
        print_json([m.as_json() for m in models])
        return 0
    if not models:
        print("the library is empty: `quantdesk pull REPO QUANT` or `quantdesk import FILE`")
    for m in models:
        origin = m.repo_id or "imported"
        missing = "" if m.present else "  (files missing)"
        print(
            f"{m.id:>3}  {m.quant:<8} {human_bytes(m.size_bytes):>10}  {m.name}  [{origin}]{missing}"
        )
    return 0


def run_rm(args: argparse.Namespace) -> int:
    library = Library()
    try:
        model = library.get(args.model)
    except LibraryError as exc:
        return fail(str(exc))
    deleted = library.remove(model, delete_files=False if args.keep_files else None)
    print(f"removed {model.name}" + (f" ({len(deleted)} file(s) deleted)" if deleted else ""))
    return 0


def run_import(args: argparse.Namespace) -> int:
    bar = _Bar() if sys.stderr.isatty() and not args.json else None
    model = None
    try:
        for step in Library().import_file(args.path):
            model = step.model or model
            if bar is not None:
                bar.draw("hashing", step.bytes_done, step.bytes_total, "")
    except (LibraryError, GGUFError) as exc:
        return fail(str(exc))
    finally:
        if bar is not None:
            bar.end()
    if model is None:
        return fail("the import stopped")
    if args.json:
        print_json(model.as_json())
    else:
        print(model.path)
    return 0


class _Bar:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self) -> None:
        self.last = 0.0

    def show(self, step: download.DownloadProgress) -> None:
        if step.state == "retrying":
            self.draw(step.state, step.bytes_done, step.bytes_total, step.message, force=True)
            return
        eta = f" ETA {step.eta_s:.0f}s" if step.eta_s is not None else ""
        speed = f" {human_bytes(step.speed_bps)}/s" if step.speed_bps else ""
        shard = f" [{step.shard}/{step.shards}]" if step.shards > 1 else ""
        self.draw(step.state, step.bytes_done, step.bytes_total, f"{speed}{eta}{shard}")

    def draw(self, state: str, done: int, total: int, tail: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 0.1 and done < total:
            return
        self.last = now
        frac = done / total if total else 0.0
        filled = int(frac * 30)
        bar = "#" * filled + "-" * (30 - filled)
        text = f"\r{state:<11} [{bar}] {frac:6.1%} {human_bytes(done)}/{human_bytes(total)}{tail}"
        sys.stderr.write(text.ljust(100)[:120])
        sys.stderr.flush()

    def end(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()
