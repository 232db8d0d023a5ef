"""The user's own task: a JSONL file of prompts, scored per variant against the reference.

Each line is ``{"prompt": "...", "expected": "..."}`` (``expected`` optional).  A line's score is
1 or 0 for whether the reply contains the expected answer (case and spacing ignored) when one is
given, otherwise the word-level similarity of the reply to the reference's reply (difflib's ratio,
0..1).  A variant's score is the mean over the lines it answered; its degradation is the relative
drop against the reference's score, in percent, and the verdict compares it with the threshold.
Malformed lines are reported with their line number and skipped; the rest runs.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FINE = "fine for this task"
INVESTIGATE = "investigate"
REFERENCE = "reference"


@dataclass(frozen=True)
class PromptItem:
    """One prompt (as chat messages), its expected answer, and its line in the file (if any)."""

    messages: list[dict[str, str]]
    expected: str | None = None
    line: int | None = None

    @property
    def prompt(self) -> str:
        return self.messages[-1]["content"] if self.messages else ""

    @staticmethod
    def single(prompt: str, system: str | None = None) -> PromptItem:
        msgs = [{"role": "system", "content": system}] if system else []
        return PromptItem([*msgs, {"role": "user", "content": prompt}])


@dataclass(frozen=True)
class LineError:
    line: int
    error: str


def parse_prompts(text: str) -> tuple[list[PromptItem], list[LineError]]:
    """Parse JSONL text; blank lines are skipped, bad lines become LineError (1-based numbers)."""
    items: list[PromptItem] = []
    errors: list[LineError] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            errors.append(LineError(n, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(obj, dict):
            errors.append(LineError(n, 'expected an object like {"prompt": "..."}'))
            continue
        prompt = obj.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            errors.append(LineError(n, 'missing "prompt" (a non-empty string)'))
            continue
        expected = obj.get("expected")
        if expected is not None and not isinstance(expected, (str, int, float)):
            errors.append(LineError(n, '"expected" must be a string or a number'))
            continue
        exp = None if expected is None else str(expected)
        items.append(PromptItem([{"role": "user", "content": prompt}], exp, n))
    return items, errors


def read_prompts(path: str | Path) -> tuple[list[PromptItem], list[LineError]]:
    """Read a JSONL task file; an unreadable file raises ValueError with the reason."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p.name} is not UTF-8 text") from exc
    except OSError as exc:
        raise ValueError(f"cannot read {p}: {exc.strerror or exc}") from exc
    return parse_prompts(text)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def score_reply(reply: str, expected: str | None, reference_reply: str | None) -> float:
    """1/0 for the expected answer found in the reply; else similarity to the reference's reply."""
    if expected is not None:
        want = _norm(expected)
        return 1.0 if want and f" {want} " in f" {_norm(reply)} " else 0.0
    if reference_reply is None:
        return 0.0
    a, b = _norm(reply).split(), _norm(reference_reply).split()
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(a=a, b=b, autojunk=False).ratio()


def degradation_pct(score: float, reference_score: float) -> float:
    """Relative drop against the reference, in percent (negative: the variant did better)."""
    if reference_score <= 0:
        return 0.0 if score <= 0 else -100.0  # nothing to lose against a reference scoring zero
    return 100.0 * (reference_score - score) / reference_score


def verdict(degradation: float, threshold_pct: float) -> str:
    return FINE if degradation <= threshold_pct else INVESTIGATE


@dataclass
class TaskVariant:
    model: str
    quant: str
    score: float | None
    degradation_pct: float | None
    verdict: str
    answered: int


@dataclass
class TaskItem:
    line: int | None
    prompt: str
    expected: str | None
    replies: list[str | None]
    scores: list[float | None]


@dataclass
class TaskReport:
    """Scores, degradation and verdicts per variant; per-line replies; the malformed lines."""

    threshold_pct: float
    prompts: int
    variants: list[TaskVariant]
    items: list[TaskItem]
    errors: list[LineError] = field(default_factory=list)
    cancelled: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> TaskReport:
        return TaskReport(
            threshold_pct=data["threshold_pct"],
            prompts=data["prompts"],
            variants=[TaskVariant(**v) for v in data["variants"]],
            items=[TaskItem(**i) for i in data["items"]],
            errors=[LineError(**e) for e in data["errors"]],
            cancelled=data["cancelled"],
        )


def build_task_report(
    items: list[PromptItem],
    replies: list[list[str | None]],  # [variant][item]
    ref: int,
    names: list[tuple[str, str]],  # (model, quant) per variant
    threshold_pct: float,
    errors: list[LineError],
    cancelled: bool,
) -> TaskReport:
    """Score every variant's replies; lines the reference did not answer are left out."""
    scores: list[list[float | None]] = []
    for v, row in enumerate(replies):
        out: list[float | None] = []
        for k, item in enumerate(items):
            reply, ref_reply = row[k], replies[ref][k]
            if reply is None or ref_reply is None:
                out.append(None)
            else:
                out.append(score_reply(reply, item.expected, ref_reply if v != ref else reply))
        scores.append(out)
    # Compare like with like: only the lines that both the reference and the variant answered.
    variants: list[TaskVariant] = []
    for v, (model, quant) in enumerate(names):
        both = [
            k for k in range(len(items)) if scores[v][k] is not None and scores[ref][k] is not None
        ]
        if not both:
            variants.append(TaskVariant(model, quant, None, None, INVESTIGATE, 0))
            continue
        mine = sum(scores[v][k] or 0.0 for k in both) / len(both)
        theirs = sum(scores[ref][k] or 0.0 for k in both) / len(both)
        drop = degradation_pct(mine, theirs)
        word = REFERENCE if v == ref else verdict(drop, threshold_pct)
        variants.append(TaskVariant(model, quant, mine, drop, word, len(both)))
    task_items = [
        TaskItem(
            item.line,
            item.prompt,
            item.expected,
            [replies[v][k] for v in range(len(replies))],
            [scores[v][k] for v in range(len(replies))],
        )
        for k, item in enumerate(items)
    ]
    return TaskReport(threshold_pct, len(items), variants, task_items, list(errors), cancelled)
