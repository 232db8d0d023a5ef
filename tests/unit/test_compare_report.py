"""Exports of a comparison parse back: JSON round-trips, CSV and Markdown tables read back."""

from __future__ import annotations

import csv
import io
import json

from app.core.compare_report import (
    COLUMNS,
    CompareReport,
    VariantResult,
    parse_markdown_table,
    to_csv,
    to_json_text,
    to_markdown,
)
from app.core.taskeval import LineError, build_task_report, parse_prompts

TRICKY = 'a | pipe, a "quote", a comma\nand ``` a fence\\ and a backslash'


def _report() -> CompareReport:
    results = []
    for i, (quant, kld) in enumerate([("F16", 0.0), ("Q4_K_M", 0.8), ("Q2_K", 1.9)]):
        results.append(
            VariantResult(
                model=f"/models/m-{quant}.gguf",
                quant=quant,
                size_bytes=1000 * (3 - i),
                load_s=0.1 * i,
                ttft_s=0.05,
                prompt_tok_s=500.0,
                gen_tok_s=40.0 + i,
                peak_rss_bytes=1 << 20,
                reply={"kld_mean": kld, "kld_p99": kld * 3, "top1_agreement": 1 - kld / 4,
                       "perplexity": 12.0, "positions": 30},
                reference_text={"kld_mean": kld, "kld_p99": kld, "top1_agreement": 0.9,
                                "perplexity": 10.0, "positions": 900},
                text=TRICKY if i == 1 else f"reply {i}",
                error="engine died" if i == 2 else None,
            )
        )  # fmt: skip
    items, _ = parse_prompts('{"prompt": "p", "expected": "reply"}')
    task = build_task_report(
        items,
        [["reply 0"], [TRICKY], ["no"]],
        0,
        [(r.model, r.quant) for r in results],
        5.0,
        [LineError(2, "not valid JSON")],
        False,
    )
    return CompareReport("/models/m-F16.gguf", 0, "sequential", "too big | together", results, task)


def test_json_round_trips_and_has_the_documented_keys():
    report = _report()
    data = json.loads(to_json_text(report))
    assert set(data) == {"reference", "mode", "mode_reason", "cancelled", "results", "task"}
    for key in ("model", "quant", "size_bytes", "load_s", "ttft_s", "gen_tok_s",
                "peak_rss_bytes", "kld_mean", "top1_agreement", "text"):  # fmt: skip
        assert key in data["results"][0]
    assert data["results"][1]["text"] == TRICKY
    back = CompareReport.from_json(data)
    assert back.to_json() == report.to_json()
    assert back.task is not None and back.task.errors[0].line == 2


def test_csv_reads_back_with_every_value():
    report = _report()
    table = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert len(table) == 3
    assert [r["quant"] for r in table] == ["F16", "Q4_K_M", "Q2_K"]
    assert table[1]["text"] == TRICKY
    assert float(table[2]["kld_mean"]) == 1.9 and table[2]["error"] == "engine died"
    assert table[0]["reference"] == "True" and table[0]["task_verdict"] == "reference"
    assert table[2]["task_verdict"] == "investigate"


def test_markdown_table_reads_back_and_replies_are_fenced():
    report = _report()
    md = to_markdown(report)
    table = parse_markdown_table(md)
    assert len(table) == 3
    assert set(table[0]) == {label for _, label in COLUMNS}
    assert table[1]["Quant"] == "Q4_K_M" and table[1]["KLD reply"] == "0.8000"
    assert table[0]["Model"] == "/models/m-F16.gguf"
    assert table[2]["Error"] == "engine died"
    assert "````\n" + TRICKY + "\n````" in md  # the fence is longer than any run inside
    assert "line 2: not valid JSON" in md
