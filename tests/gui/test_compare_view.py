"""The Compare page: panes stream at once, the table and chart fill in, exports, stop, bad input."""

from __future__ import annotations

import csv
import json

import pytest

from app.core.compare import CompareOptions, ReplyDone, TextPiece
from app.core.compare_report import COLUMNS
from app.ui.compare_view import CompareView, show_compare
from app.ui.main_window import MainWindow

QUICK = CompareOptions(max_tokens=200, reference_text_max_tokens=600)


@pytest.fixture
def window(qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()


def _cell(view: CompareView, row: int, key: str) -> str:
    item = view.table.item(row, [k for k, _ in COLUMNS].index(key))
    return item.text() if item is not None else ""


def test_panes_stream_side_by_side_and_the_table_fills_in(
    window, qtbot, tiny_models, tiny_f16, tmp_path
):
    paths = [tiny_models["Q2_K"], tiny_f16, tiny_models["Q8_0"]]
    view = show_compare(window, paths)
    assert isinstance(view, CompareView) and window.current_title() == "Compare"
    assert view.models() == [str(p) for p in paths]
    view.prompt_edit.setText("Tell me about the water and the people.")
    seen: list[tuple[str, int]] = []
    view._task.item_produced.connect(
        lambda e: (
            seen.append((type(e).__name__, e.index))
            if isinstance(e, (TextPiece, ReplyDone))
            else None
        )
    )
    view.start(QUICK)
    assert view.busy and not view.run_button.isEnabled()
    qtbot.waitUntil(lambda: len(view.panes) == 3, timeout=30000)
    qtbot.waitUntil(lambda: not view.busy, timeout=120000)
    report = view.report
    assert report is not None and report.mode == "parallel" and report.reference_index == 1
    # Every pane streamed, and the streams overlapped: pieces of several variants arrived
    # before the first reply was complete.
    first_done = next(i for i, (kind, _) in enumerate(seen) if kind == "ReplyDone")
    assert len({idx for kind, idx in seen[:first_done] if kind == "TextPiece"}) >= 2
    for i, pane in enumerate(view.panes):
        assert sum(1 for kind, idx in seen if kind == "TextPiece" and idx == i) > 3
        assert pane.toPlainText() == report.results[i].text != ""
    assert view.table.rowCount() == 3
    assert _cell(view, 1, "kld_mean") == "0.0000" and _cell(view, 1, "reference") == "yes"
    for row in (0, 2):
        assert float(_cell(view, row, "kld_mean")) > 0
        assert float(_cell(view, row, "text_kld_mean")) > 0
        assert _cell(view, row, "gen_tok_s") not in ("", "-")
    assert float(_cell(view, 0, "text_kld_mean")) > float(_cell(view, 2, "text_kld_mean"))
    assert len(view.chart.points) == 3 and all(p.kld is not None for p in view.chart.points)
    view.chart.grab()  # paints both scatter panels
    assert all(b.isEnabled() for b in view.export_buttons.values())
    table = list(csv.DictReader(view.export("csv", tmp_path / "c.csv").open()))
    assert [r["quant"] for r in table] == ["Q2_K", "F16", "Q8_0"]
    data = json.loads(view.export("json", tmp_path / "c.json").read_text())
    assert data["results"][2]["text"] == report.results[2].text
    assert "| Q8_0 |" in view.export("md", tmp_path / "c.md").read_text()


def test_stop_winds_down_and_keeps_what_ran(qtbot, tiny_models, tiny_f16):
    view = CompareView(models=[tiny_f16, tiny_models["Q4_0"]])
    qtbot.addWidget(view)
    view.prompt_edit.setText("hello")
    view.start(CompareOptions(max_tokens=4000, n_ctx=4096))
    qtbot.waitUntil(lambda: any(p.toPlainText() for p in view.panes), timeout=30000)
    view.stop_button.click()
    qtbot.waitUntil(lambda: not view.busy, timeout=30000)
    assert view.report is not None and view.report.cancelled
    assert "Stopped" in view.status.text() and view.run_button.isEnabled()


def test_bad_inputs_are_explained_and_start_nothing(qtbot, tiny_models, tmp_path):
    view = CompareView(models=[tiny_models["Q8_0"]])
    qtbot.addWidget(view)
    view.prompt_edit.setText("hi")
    view.start()
    assert "at least two" in view.status.text() and not view.busy
    view.set_models([tiny_models["Q8_0"], tmp_path / "missing.gguf"])
    view.start(CompareOptions(max_tokens=4, reference_text=""))
    qtbot.waitUntil(lambda: not view.busy, timeout=30000)
    assert "could not run" in view.status.text() and "missing.gguf" in view.status.text()
    assert view.run_button.isEnabled()
