"""The Compare page: the same prompt on several quant variants, side by side, with measured drift.

Thin over app.core.compare: the whole run (header reads, planning, engines, scoring) is one core
generator run off the GUI thread through app.ui.bridge; its events stream into one read-only pane
per variant, then fill the results table and the quality chart.  Replies are model output and are
shown as plain text only.  Other pages open it with :meth:`CompareView.set_models`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.compare import (
    CompareOptions,
    Finished,
    PlanReady,
    Progress,
    ReplyDone,
    TextPiece,
    VariantFailed,
    run_compare,
)
from app.core.compare_report import (
    COLUMNS,
    CompareReport,
    format_cell,
    rows,
    to_csv,
    to_json_text,
    to_markdown,
)
from app.core.taskeval import PromptItem, read_prompts
from app.ui.bridge import CancelToken, LatestTask, TaskRunner
from app.ui.compare_chart import ChartPoint, QualityChart
from app.ui.widgets.cards import PlainLabel

EXPORTS = {"csv": (to_csv, "CSV (*.csv)"), "md": (to_markdown, "Markdown (*.md)")}
EXPORTS["json"] = (to_json_text, "JSON (*.json)")
_AUTO = "highest precision (automatic)"


def _work(
    models: list[str],
    prompt: str,
    prompt_file: str | None,
    reference: str | None,
    options: CompareOptions,
) -> Any:
    """The background job: read the task file (if any), then run the comparison."""

    def job(token: CancelToken) -> Iterator[Any]:
        errors: list[Any] = []
        if prompt_file:
            items, errors = read_prompts(prompt_file)
            if not items:
                raise ValueError(f"{Path(prompt_file).name} has no usable prompt")
        else:
            items = [PromptItem.single(prompt)]
        yield from run_compare(
            models, items, reference=reference, options=options, cancel=token, task_errors=errors
        )

    return job


def show_compare(window: Any, models: list[str | Path]) -> CompareView:
    """Open the Compare page of ``window`` (a MainWindow) with these variants, ready to run.

    What the Library's and the Models page's "compare variants of this model" call.
    """
    page = window.show_page("Compare")
    page.set_models(models)
    return page


class CompareView(QWidget):
    """Pick variants, send one prompt or a task file, watch them answer side by side.

    Signals:
        run_finished(object): the CompareReport of a run that ended (also after Stop).
    """

    run_finished = Signal(object)

    def __init__(
        self,
        context: Any = None,
        models: list[str | Path] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        runner = context.runner if context is not None else TaskRunner(self)
        self._task = LatestTask(runner, self)
        self._task.item_produced.connect(self._on_event)
        self._task.finished.connect(self._on_done)
        self._task.failed.connect(self._on_failed)
        self.report: CompareReport | None = None
        self.panes: list[QPlainTextEdit] = []
        self._pending: dict[int, list[str]] = {}
        self._last_item: dict[int, int] = {}
        self._prompt_file: str | None = None
        self._flush_timer = QTimer(self)
        self._flush_timer.setInterval(40)  # batch streamed pieces: one repaint per pane per tick
        self._flush_timer.timeout.connect(self._flush)
        self._build()
        self.set_models(models or [])

    # ---- layout -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.model_list = QListWidget()
        self.model_list.setMaximumHeight(110)
        add = QPushButton("Add model…")
        add.clicked.connect(self._add_models)
        remove = QPushButton("Remove")
        remove.clicked.connect(self._remove_selected)
        self.reference_box = QComboBox()
        self.prompt_edit = QLineEdit()
        self.prompt_edit.setPlaceholderText("A prompt that every variant answers")
        self.file_button = QPushButton("Prompt file (JSONL)…")
        self.file_button.clicked.connect(self._pick_prompt_file)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 8192)
        self.max_tokens.setValue(128)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 100.0)
        self.threshold.setValue(5.0)
        self.threshold.setSuffix(" %")
        self.run_button = QPushButton("Compare")
        self.run_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.status = PlainLabel("")
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setVisible(False)

        models_col = QVBoxLayout()
        models_col.addWidget(self.model_list)
        buttons = QHBoxLayout()
        buttons.addWidget(add)
        buttons.addWidget(remove)
        buttons.addStretch(1)
        models_col.addLayout(buttons)
        form = QFormLayout()
        form.addRow("Reference", self.reference_box)
        prompt_row = QHBoxLayout()
        prompt_row.addWidget(self.prompt_edit, 1)
        prompt_row.addWidget(self.file_button)
        form.addRow("Prompt", prompt_row)
        knobs = QHBoxLayout()
        knobs.addWidget(PlainLabel("Max tokens"))
        knobs.addWidget(self.max_tokens)
        knobs.addWidget(PlainLabel("Verdict threshold"))
        knobs.addWidget(self.threshold)
        knobs.addStretch(1)
        knobs.addWidget(self.run_button)
        knobs.addWidget(self.stop_button)
        form.addRow(knobs)
        top = QHBoxLayout()
        top.addLayout(models_col, 2)
        top.addLayout(form, 3)

        self.pane_row = QHBoxLayout()
        panes = QWidget()
        panes.setLayout(self.pane_row)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([label for _, label in COLUMNS])
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.chart = QualityChart()
        exports = QHBoxLayout()
        self.export_buttons: dict[str, QPushButton] = {}
        for kind, label in (("csv", "CSV"), ("md", "Markdown"), ("json", "JSON")):
            b = QPushButton(f"Export {label}…")
            b.setEnabled(False)
            b.clicked.connect(lambda _=False, k=kind: self._export_dialog(k))
            exports.addWidget(b)
            self.export_buttons[kind] = b
        exports.addStretch(1)
        results = QWidget()
        rl = QVBoxLayout(results)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.table, 1)
        rl.addLayout(exports)
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(results)
        bottom.addWidget(self.chart)
        bottom.setSizes([700, 400])
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(panes)
        split.addWidget(bottom)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.status)
        layout.addWidget(self.progress)
        layout.addWidget(split, 1)

    # ---- inputs -----------------------------------------------------------------------------
    def set_models(self, models: list[str | Path]) -> None:
        """Replace the variants to compare (the Library's "compare variants of this model")."""
        self.model_list.clear()
        for m in models:
            self.model_list.addItem(str(m))
        self._refresh_reference()

    def models(self) -> list[str]:
        return [self.model_list.item(i).text() for i in range(self.model_list.count())]

    def set_prompt_file(self, path: str | Path | None) -> None:
        self._prompt_file = str(path) if path else None
        name = Path(path).name if path else ""
        self.file_button.setText(f"File: {name}" if name else "Prompt file (JSONL)…")
        self.prompt_edit.setEnabled(not name)

    def _refresh_reference(self) -> None:
        current = self.reference_box.currentText()
        self.reference_box.clear()
        self.reference_box.addItem(_AUTO)
        for m in self.models():
            self.reference_box.addItem(Path(m).name, m)
        at = self.reference_box.findText(current)
        self.reference_box.setCurrentIndex(max(0, at))

    def _add_models(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add variants", "", "GGUF models (*.gguf)")
        self.set_models(self.models() + files)

    def _remove_selected(self) -> None:
        for item in self.model_list.selectedItems():
            self.model_list.takeItem(self.model_list.row(item))
        self._refresh_reference()

    def _pick_prompt_file(self) -> None:
        if self._prompt_file:
            self.set_prompt_file(None)
            return
        path, _ = QFileDialog.getOpenFileName(self, "Prompt file", "", "JSON lines (*.jsonl)")
        if path:
            self.set_prompt_file(path)

    # ---- running ----------------------------------------------------------------------------
    def start(self, options: CompareOptions | None = None) -> None:
        """Start a comparison with the current inputs (``options`` override the form)."""
        models = self.models()
        if len(models) < 2:
            self.status.setText("Add at least two variants of the model to compare.")
            return
        prompt = self.prompt_edit.text().strip()
        if not prompt and not self._prompt_file:
            self.status.setText("Type a prompt or choose a prompt file.")
            return
        options = options or CompareOptions(
            max_tokens=self.max_tokens.value(), threshold_pct=self.threshold.value()
        )
        reference = self.reference_box.currentData()
        self.report = None
        self._clear_results()
        self.status.setText("Reading the variants and planning memory…")
        self.run_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self._flush_timer.start()
        self._task.start(_work(models, prompt, self._prompt_file, reference, options), "compare")

    def stop(self) -> None:
        """Stop the run; the variants wind down and the figures measured so far are shown."""
        if self._task.current is not None:
            self._task.current.cancel()
            self.status.setText("Stopping…")

    @property
    def busy(self) -> bool:
        return self._task.busy

    def shutdown(self) -> None:
        self._task.cancel()

    def _clear_results(self) -> None:
        for pane in self.panes:
            pane.parentWidget().deleteLater()
        self.panes = []
        self._pending.clear()
        self._last_item.clear()
        self.table.setRowCount(0)
        self.chart.set_points([])
        for b in self.export_buttons.values():
            b.setEnabled(False)

    def _on_event(self, event: object) -> None:
        if isinstance(event, TextPiece):
            self._pending.setdefault(event.index, [])
            if self._last_item.get(event.index, 0) != event.item:
                self._last_item[event.index] = event.item
                self._pending[event.index].append(f"\n\n--- prompt {event.item + 1} ---\n")
            self._pending[event.index].append(event.text)
        elif isinstance(event, PlanReady):
            self._make_panes(event)
        elif isinstance(event, ReplyDone):
            self._set_row_speed(event)
        elif isinstance(event, Progress):
            self.progress.setVisible(event.total > 1)
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)
            self.progress.setFormat(f"{event.stage}: %v / %m")
        elif isinstance(event, VariantFailed):
            self._pending.setdefault(event.index, []).append(f"\n[failed] {event.message}\n")
        elif isinstance(event, Finished):
            self._flush()
            self._show_report(event.report)

    def _make_panes(self, event: PlanReady) -> None:
        self.table.setRowCount(len(event.variants))
        for i, v in enumerate(event.variants):
            ref = " (reference)" if i == event.reference_index else ""
            box = QGroupBox(f"{v.quant}{ref}")
            box.setToolTip(str(v.path))
            pane = QPlainTextEdit()
            pane.setReadOnly(True)
            QVBoxLayout(box).addWidget(pane)
            self.pane_row.addWidget(box)
            self.panes.append(pane)
            self._set_cell(i, "model", v.label, str(v.path))
            self._set_cell(i, "quant", v.quant)
            self._set_cell(i, "reference", i == event.reference_index)
            self._set_cell(i, "size_bytes", v.size_bytes)
        self.status.setText(f"Mode: {event.plan.mode} — {event.plan.reason}")

    def _flush(self) -> None:
        for index, pieces in self._pending.items():
            if pieces and index < len(self.panes):
                pane = self.panes[index]
                pane.moveCursor(QTextCursor.MoveOperation.End)
                pane.insertPlainText("".join(pieces))
                pieces.clear()

    def _set_cell(self, row: int, key: str, value: object, tip: str = "") -> None:
        col = [k for k, _ in COLUMNS].index(key)
        item = QTableWidgetItem(value if isinstance(value, str) else format_cell(key, value))
        if tip:
            item.setToolTip(tip)
        self.table.setItem(row, col, item)

    def _set_row_speed(self, event: ReplyDone) -> None:
        s = event.stats
        self._set_cell(event.index, "ttft_s", s.ttft_s)
        self._set_cell(event.index, "prompt_tok_s", s.prompt_tok_s)
        self._set_cell(event.index, "gen_tok_s", s.gen_tok_s)

    def _show_report(self, report: CompareReport) -> None:
        self.report = report
        self.table.setRowCount(len(report.results))
        points = []
        for i, row in enumerate(rows(report)):
            for key, _ in COLUMNS:
                if key == "model":
                    self._set_cell(i, key, Path(row[key]).name, row[key])
                else:
                    self._set_cell(i, key, row[key])
            kld = row["text_kld_mean"] if row["text_kld_mean"] is not None else row["kld_mean"]
            size = row["size_bytes"] / (1 << 20)
            points.append(ChartPoint(row["quant"], size, row["gen_tok_s"], kld, row["reference"]))
        self.table.resizeColumnsToContents()
        self.chart.set_points(points)
        for b in self.export_buttons.values():
            b.setEnabled(True)
        stopped = " Stopped: the figures cover what ran." if report.cancelled else ""
        self.status.setText(f"Done — mode: {report.mode} ({report.mode_reason}).{stopped}")
        self.run_finished.emit(report)

    def _on_done(self) -> None:
        self._flush_timer.stop()
        self._flush()
        self.run_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.progress.setVisible(False)

    def _on_failed(self, message: str, _exc: object) -> None:
        self._on_done()
        self.status.setText(f"The comparison could not run: {message}")

    # ---- export -----------------------------------------------------------------------------
    def export(self, kind: str, path: str | Path) -> Path:
        """Write the last report as ``kind`` ("csv", "md", "json") to ``path``."""
        if self.report is None:
            raise ValueError("nothing to export yet")
        render, _ = EXPORTS[kind]
        out = Path(path)
        out.write_text(render(self.report), encoding="utf-8")
        return out

    def _export_dialog(self, kind: str) -> None:
        _, filt = EXPORTS[kind]
        path, _ = QFileDialog.getSaveFileName(self, "Export comparison", f"comparison.{kind}", filt)
        if path:
            try:
                self.export(kind, path)
                self.status.setText(f"Saved {path}")
            except OSError as exc:
                self.status.setText(f"Could not save {path}: {exc.strerror or exc}")
