"""The result of a comparison and its exports: JSON (the CLI's contract), CSV and Markdown.

JSON keys (``quantdesk compare --json``): ``reference``, ``mode``, ``mode_reason``, ``cancelled``,
``results`` -- one object per variant with ``model``, ``quant``, ``size_bytes``, ``load_s``,
``ttft_s``, ``prompt_tok_s``, ``gen_tok_s``, ``peak_rss_bytes``, ``kld_mean``, ``kld_p99``,
``top1_agreement``, ``perplexity`` and ``positions`` (teacher-forced on the reference's reply),
``reference_text`` (the same numbers over the shipped reference text), ``text`` and ``error`` --
and ``task`` (null unless a prompt file was given; see app.core.taskeval.TaskReport).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from app.core.taskeval import TaskReport
from app.core.units import human_bytes

_QUALITY_KEYS = ("kld_mean", "kld_p99", "top1_agreement", "perplexity", "positions")


@dataclass
class VariantResult:
    """Speed, memory and drift of one variant; metric dicts come from quality.Drift.summary."""

    model: str
    quant: str
    size_bytes: int
    load_s: float | None
    ttft_s: float | None
    prompt_tok_s: float | None
    gen_tok_s: float | None
    peak_rss_bytes: int | None
    reply: dict[str, Any] = field(default_factory=dict)
    reference_text: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    error: str | None = None

    @property
    def kld_mean(self) -> float | None:
        return self.reply.get("kld_mean")

    @property
    def top1_agreement(self) -> float | None:
        return self.reply.get("top1_agreement")


@dataclass
class CompareReport:
    reference: str
    reference_index: int
    mode: str
    mode_reason: str
    results: list[VariantResult]
    task: TaskReport | None = None
    cancelled: bool = False

    def to_json(self) -> dict[str, Any]:
        results = []
        for r in self.results:
            row: dict[str, Any] = {
                k: getattr(r, k)
                for k in ("model", "quant", "size_bytes", "load_s", "ttft_s", "prompt_tok_s")
            }
            row["gen_tok_s"] = r.gen_tok_s
            row["peak_rss_bytes"] = r.peak_rss_bytes
            for k in _QUALITY_KEYS:
                row[k] = r.reply.get(k)
            row["reference_text"] = {k: r.reference_text.get(k) for k in _QUALITY_KEYS}
            row["text"] = r.text
            row["error"] = r.error
            results.append(row)
        return {
            "reference": self.reference,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "cancelled": self.cancelled,
            "results": results,
            "task": self.task.to_json() if self.task else None,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> CompareReport:
        results = []
        for row in data["results"]:
            results.append(
                VariantResult(
                    **{k: row[k] for k in ("model", "quant", "size_bytes", "load_s", "ttft_s")},
                    prompt_tok_s=row["prompt_tok_s"],
                    gen_tok_s=row["gen_tok_s"],
                    peak_rss_bytes=row["peak_rss_bytes"],
                    reply={k: row[k] for k in _QUALITY_KEYS},
                    reference_text=dict(row["reference_text"]),
                    text=row["text"],
                    error=row["error"],
                )
            )
        refs = [i for i, r in enumerate(results) if r.model == data["reference"]]
        return CompareReport(
            reference=data["reference"],
            reference_index=refs[0] if refs else 0,
            mode=data["mode"],
            mode_reason=data["mode_reason"],
            results=results,
            task=TaskReport.from_json(data["task"]) if data.get("task") else None,
            cancelled=data["cancelled"],
        )


# ---- flat rows for tables (CSV, Markdown, the GUI) --------------------------------------------
COLUMNS = [
    ("model", "Model"),
    ("quant", "Quant"),
    ("reference", "Reference"),
    ("size_bytes", "Size"),
    ("load_s", "Load (s)"),
    ("ttft_s", "First token (s)"),
    ("prompt_tok_s", "Prompt tok/s"),
    ("gen_tok_s", "Gen tok/s"),
    ("peak_rss_bytes", "Peak RSS"),
    ("kld_mean", "KLD reply"),
    ("top1_agreement", "Top-1 reply"),
    ("text_kld_mean", "KLD ref. text"),
    ("text_top1_agreement", "Top-1 ref. text"),
    ("task_score", "Task score"),
    ("task_degradation_pct", "Degradation %"),
    ("task_verdict", "Verdict"),
    ("error", "Error"),
]


def rows(report: CompareReport) -> list[dict[str, Any]]:
    """One flat dict per variant, keys as in COLUMNS (None where not measured)."""
    out = []
    for i, r in enumerate(report.results):
        task = report.task.variants[i] if report.task and i < len(report.task.variants) else None
        out.append(
            {
                "model": r.model,
                "quant": r.quant,
                "reference": i == report.reference_index,
                "size_bytes": r.size_bytes,
                "load_s": r.load_s,
                "ttft_s": r.ttft_s,
                "prompt_tok_s": r.prompt_tok_s,
                "gen_tok_s": r.gen_tok_s,
                "peak_rss_bytes": r.peak_rss_bytes,
                "kld_mean": r.reply.get("kld_mean"),
                "top1_agreement": r.reply.get("top1_agreement"),
                "text_kld_mean": r.reference_text.get("kld_mean"),
                "text_top1_agreement": r.reference_text.get("top1_agreement"),
                "task_score": task.score if task else None,
                "task_degradation_pct": task.degradation_pct if task else None,
                "task_verdict": task.verdict if task else None,
                "error": r.error,
            }
        )
    return out


def to_json_text(report: CompareReport) -> str:
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n"


def to_csv(report: CompareReport) -> str:
    """One row per variant, the COLUMNS keys as header plus the reply text; empty = not measured."""
    buf = io.StringIO()
    keys = [k for k, _ in COLUMNS] + ["text"]
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r, row in zip(report.results, rows(report), strict=True):
        writer.writerow({k: "" if v is None else v for k, v in {**row, "text": r.text}.items()})
    return buf.getvalue()


def format_cell(key: str, value: Any) -> str:
    """A value as a person reads it in a table (shared by Markdown and the GUI)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else ""
    if key in ("size_bytes", "peak_rss_bytes"):
        return human_bytes(value)
    if key in ("kld_mean", "text_kld_mean"):
        return f"{value:.4f}"
    if key in ("top1_agreement", "text_top1_agreement", "task_score"):
        return f"{100 * value:.1f}%"
    if key == "task_degradation_pct":
        return f"{value:+.1f}%"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def to_markdown(report: CompareReport) -> str:
    """A Markdown document: the mode, a table of every variant, then each reply as a code block."""
    lines = [
        "# QuantDesk comparison",
        "",
        f"- Reference: `{report.reference}`",
        f"- Mode: {report.mode} ({report.mode_reason})",
    ]
    if report.cancelled:
        lines.append("- Stopped before the end: the figures cover what ran.")
    lines += ["", "| " + " | ".join(label for _, label in COLUMNS) + " |"]
    lines.append("|" + "---|" * len(COLUMNS))
    for row in rows(report):
        cells = [_md_cell(format_cell(k, row[k])) for k, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    if report.task and report.task.errors:
        lines += ["", "## Lines skipped", ""]
        lines += [f"- line {e.line}: {e.error}" for e in report.task.errors]
    lines += ["", "## Replies", ""]
    for r in report.results:
        fence = "```"
        while fence in r.text:
            fence += "`"
        lines += [f"### {r.quant} ({r.model})", "", fence, r.text, fence, ""]
    return "\n".join(lines)


def parse_markdown_table(text: str) -> list[dict[str, str]]:
    """Read back the table of :func:`to_markdown` (label -> cell text), for tests and scripts."""
    table = [ln for ln in text.splitlines() if ln.startswith("| ")]
    if not table:
        return []

    def split(line: str) -> list[str]:
        cells, cur, i = [], "", 1
        body = line.strip()
        while i < len(body) - 1:
            ch = body[i]
            if ch == "\\" and i + 1 < len(body):
                cur += body[i + 1]
                i += 2
                continue
            if ch == "|":
                cells.append(cur.strip())
                cur = ""
            else:
                cur += ch
            i += 1
        cells.append(cur.strip())
        return cells

    header = split(table[0])
    return [dict(zip(header, split(ln), strict=True)) for ln in table[1:]]


__all__ = [
    "COLUMNS",
    "CompareReport",
    "VariantResult",
    "format_cell",
    "parse_markdown_table",
    "rows",
    "to_csv",
    "to_json_text",
    "to_markdown",
]
