"""The Compare page: the same prompt on several quant variants, side by side, with measured drift.

Thin over app.core.compare: the whole run (header reads, planning, engines, scoring) is one core
generator run off the GUI thread through app.ui.bridge; its events stream into one read-only pane
per variant, then fill the results table and the quality chart.  Replies are model output and are
shown as plain text only.  Other pages open it with :meth:`CompareView.set_models`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QPainter, QPaintEvent, QPalette, QTextCursor
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
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
    VariantLoaded,
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
from app.core.planning import Planner
from app.core.speed import record_measured
from app.core.taskeval import PromptItem, read_prompts
from app.ui.bridge import CancelToken, LatestTask, TaskRunner
from app.ui.pages.compare.chart import ChartPoint, QualityChart
from app.ui.pages.library import same_model
from app.ui.widgets.cards import Card, PageHeader, PlainLabel, muted, plain_tooltip
from app.ui.widgets.format import human_bytes

EXPORTS = {"csv": (to_csv, "CSV (*.csv)"), "md": (to_markdown, "Markdown (*.md)")}
EXPORTS["json"] = (to_json_text, "JSON (*.json)")
_AUTO = "highest precision (automatic)"
_PATH_ROLE = Qt.ItemDataRole.UserRole + 1
_OPTIONAL_COLUMNS = ("task_score", "task_degradation_pct", "task_verdict", "error")
_COLUMN_TIPS = {
    "kld_mean": "Mean KL divergence from the reference over the reference's reply (nats; "
    "0 = identical, lower is better)",
    "top1_agreement": "How often the variant's most likely next token is the reference's",
    "text_kld_mean": "Mean KL divergence over the shipped reference text (nats; lower is better)",
    "text_top1_agreement": "Top-1 agreement with the reference over the shipped reference text",
    "peak_rss_bytes": "Highest resident memory of the variant's engine process",
}
_MODEL_COLUMN_MAX = 180  # px: file names are long; the tooltip has the full path
# The measured figures behind the headline: shown with "Show the method".
_METHOD_COLUMNS = ("kld_mean", "top1_agreement", "text_kld_mean", "text_top1_agreement")
QUALITY_COLUMN = len(COLUMNS)  # the headline, after the report's own columns (shown third)
# Mean KL divergence (nats per token) bands.  Below ~0.02 replies are hard to tell apart from the
# reference's; past ~0.15 a reader notices changed words and facts (llama.cpp's own perplexity
# tool reports Q8_0 near 0.001, Q4_K_M near 0.02-0.05, Q2_K above 0.2 on 7B models).
CLOSE_KLD = 0.02
LARGE_KLD = 0.15
METHOD_TEXT = (
    "Quality is the mean KL divergence (in nats per token) between each variant's next-token "
    "probabilities and the reference's: 0 means the same predictions. It is measured over the "
    "reference text shipped with QuantDesk, the same text for every variant, so it does not "
    "depend on what a variant happened to write; without that text, over the reference's own "
    f"reply. Under {CLOSE_KLD} reads as close to the reference, above {LARGE_KLD} as a large "
    "loss. Top-1 is how often a variant's most likely next token is the reference's."
)


def headline_kld(row: dict[str, Any]) -> float | None:
    """The one quality number of a result row: KL over the shared reference text, else the reply."""
    text = row.get("text_kld_mean")
    return text if text is not None else row.get("kld_mean")


def quality_verdict(kld: float | None, reference: bool = False) -> str:
    """Plain words for a mean KL divergence."""
    if reference:
        return "the reference"
    if kld is None:
        return "not measured"
    if kld < CLOSE_KLD:
        return "close to the reference"
    if kld < LARGE_KLD:
        return "noticeable loss"
    return "large loss"


def _col(key: str) -> int:
    return [k for k, _ in COLUMNS].index(key)


def _row(*widgets: QWidget | None) -> QHBoxLayout:
    """Widgets in a row; ``None`` is a stretch."""
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        if w is None:
            row.addStretch(1)
        else:
            row.addWidget(w)
    return row


class _HintList(QListWidget):
    """A list that says what belongs in it while it is empty."""

    def __init__(self, hint: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.hint = hint

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        super().paintEvent(event)
        if self.count():
            return
        p = QPainter(self.viewport())
        p.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
        area = self.viewport().rect().adjusted(10, 6, -10, -6)
        flags = Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap
        p.drawText(area, int(flags), self.hint)
        p.end()


def _work(
    models: Sequence[str | Path],
    prompt: str,
    prompt_file: str | None,
    reference: str | None,
    options: CompareOptions,
    planner: Planner | None,
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
        for event in run_compare(
            models,
            items,
            reference=reference,
            options=options,
            cancel=token,
            task_errors=errors,
            planner=planner,
        ):
            if isinstance(event, Finished) and event.report.mode == "sequential":
                # Real speeds on this machine, each variant alone on the CPU (a parallel run
                # shares it, so its figures are lower): the Models page prefers them to estimates.
                for result in rows(event.report):
                    if result["gen_tok_s"] and not result["error"]:
                        record_measured(result["model"], result["gen_tok_s"])
            yield event

    return job


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
        # The window's planner; a view on its own lets each run make (and close) one.
        self._planner: Planner | None = context.planner if context is not None else None
        self._context = context
        self._context = context
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
        outer = QVBoxLayout(self)
        outer.setContentsMargins(20, 16, 20, 16)
        outer.setSpacing(10)
        outer.addWidget(
            PageHeader(
                "Compare",
                "The same prompt on several quants of one model, side by side: speed, memory, "
                "and the quality each loses, measured against the most precise variant.",
            )
        )
        # Everything below the header scrolls: on a small window (900x600) the replies, the
        # results and the charts keep a readable height instead of being squeezed to nothing.
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        body = QWidget()
        column = QVBoxLayout(body)
        column.setContentsMargins(0, 0, 6, 0)
        column.setSpacing(10)
        scroll.setWidget(body)
        outer.addWidget(scroll, 1)
        setup = QSplitter(Qt.Orientation.Horizontal)
        setup.setChildrenCollapsible(False)
        setup.addWidget(self._build_variants())
        setup.addWidget(self._build_prompt())
        setup.setStretchFactor(0, 2)
        setup.setStretchFactor(1, 3)
        column.addWidget(setup)

        self.status = PlainLabel("")
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.progress.setMaximumWidth(260)
        self.progress.setMinimumWidth(160)
        status_row = QHBoxLayout()
        status_row.addWidget(self.status, 1)
        status_row.addWidget(self.progress)
        column.addLayout(status_row)

        split = QSplitter(Qt.Orientation.Vertical)
        split.setChildrenCollapsible(False)
        split.addWidget(self._build_replies())
        split.addWidget(self._build_results())
        self.chart = QualityChart()
        split.addWidget(self.chart)
        self.chart.setMinimumHeight(190)
        split.setSizes([220, 170, 200])
        for i, stretch in enumerate((5, 3, 4)):
            split.setStretchFactor(i, stretch)
        split.setMinimumHeight(560)  # below this the page scrolls
        column.addWidget(split, 1)

    def _build_variants(self) -> Card:
        card = Card("Variants")
        self.model_list = _HintList(
            "No variants yet: Add model…, or Compare on a model in the Library."
        )
        self.model_list.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.model_list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.model_list.setFixedHeight(88)
        self.model_list.setMinimumWidth(150)
        self.model_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        add = QPushButton("Add model…")
        add.setToolTip("Variants of the same model from the Library first, or any GGUF file")
        add.clicked.connect(self._show_add_menu)
        self.add_button = add
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self._remove_selected)
        buttons = QVBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(add)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.model_list, 1)
        row.addLayout(buttons)
        card.add(row)
        return card

    def _build_prompt(self) -> Card:
        card = Card("Prompt")
        self.reference_box = QComboBox()
        self.reference_box.setToolTip(
            "The variant the others are measured against; normally the most precise one"
        )
        self.prompt_edit = QLineEdit()
        self.prompt_edit.setPlaceholderText("A prompt that every variant answers")
        self.prompt_edit.returnPressed.connect(self.start)
        self.file_button = QPushButton("Prompt file (JSONL)…")
        self.file_button.setToolTip("Score a task file instead: one JSON object per line")
        self.file_button.clicked.connect(self._pick_prompt_file)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 8192)
        self.max_tokens.setValue(128)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 100.0)
        self.threshold.setValue(5.0)
        self.threshold.setSuffix(" %")
        self.threshold.setToolTip(
            "With a task file: a variant scoring this much worse than the reference fails"
        )
        self.run_button = QPushButton("Compare")
        self.run_button.setObjectName("primary")
        self.run_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)

        # The buttons read in full however narrow the card gets.
        for button in (self.run_button, self.stop_button, self.file_button):
            button.setMinimumWidth(button.sizeHint().width())
        self.reference_box.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.reference_box.setMinimumContentsLength(12)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        form.addRow("Prompt", _row(self.prompt_edit, self.file_button))
        form.addRow("Reference", self.reference_box)
        form.addRow("Max tokens", _row(self.max_tokens, None))
        form.addRow("Task threshold", _row(self.threshold, None))
        card.add(form)
        card.add(_row(None, self.run_button, self.stop_button))
        return card

    def _build_replies(self) -> QWidget:
        holder = QWidget()
        column = QVBoxLayout(holder)
        column.setContentsMargins(0, 0, 0, 4)
        column.addWidget(PlainLabel("Replies", name="cardTitle"))
        self.panes_hint = muted("Each variant's reply streams here as it is written.")
        self.panes_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        column.addWidget(self.panes_hint, 1)
        self.pane_row = QHBoxLayout()
        self.pane_row.setSpacing(10)
        column.addLayout(self.pane_row, 1)
        return holder

    def _build_results(self) -> QWidget:
        self.table = QTableWidget(0, len(COLUMNS) + 1)
        # Two-line headers keep the columns as narrow as their numbers: the whole table fits the
        # page's width without scrolling.
        labels = [label.replace(" ", "\n", 1) for _, label in COLUMNS] + ["Quality vs\nreference"]
        self.table.setHorizontalHeaderLabels(labels)
        # The headline sits next to the quant (logical index stays last: exports are unchanged).
        self.table.horizontalHeader().moveSection(QUALITY_COLUMN, _col("reference") + 1)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.verticalHeader().hide()
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        for key, tip in _COLUMN_TIPS.items():
            header_item = self.table.horizontalHeaderItem(_col(key))
            if header_item is not None:
                header_item.setToolTip(tip)
        quality_header = self.table.horizontalHeaderItem(QUALITY_COLUMN)
        if quality_header is not None:
            quality_header.setToolTip(plain_tooltip(METHOD_TEXT))
        self.method_toggle = QToolButton()
        self.method_toggle.setText("Show the method")
        self.method_toggle.setCheckable(True)
        self.method_toggle.toggled.connect(self._on_method_toggled)
        self.method_label = muted(METHOD_TEXT)
        self.method_label.setVisible(False)
        self._show_columns(None)
        self._fit_columns()
        self.export_buttons: dict[str, QPushButton] = {}
        exports = QHBoxLayout()
        exports.addWidget(PlainLabel("Results", name="cardTitle"))
        exports.addWidget(self.method_toggle)
        exports.addStretch(1)
        for kind, label in (("csv", "CSV"), ("md", "Markdown"), ("json", "JSON")):
            b = QPushButton(f"Export {label}…")
            b.setEnabled(False)
            b.clicked.connect(lambda _=False, k=kind: self._export_dialog(k))
            exports.addWidget(b)
            self.export_buttons[kind] = b
        results = QWidget()
        column = QVBoxLayout(results)
        column.setContentsMargins(0, 4, 0, 0)
        column.addLayout(exports)
        column.addWidget(self.method_label)
        column.addWidget(self.table, 1)
        return results

    def _on_method_toggled(self, on: bool) -> None:
        self.method_toggle.setText("Hide the method" if on else "Show the method")
        self.method_label.setVisible(on)
        for key in _METHOD_COLUMNS:
            self.table.setColumnHidden(_col(key), not on)
        self._fit_columns()

    def _fit_columns(self) -> None:
        self.table.resizeColumnsToContents()
        model_col = _col("model")
        if self.table.columnWidth(model_col) > _MODEL_COLUMN_MAX:
            self.table.setColumnWidth(model_col, _MODEL_COLUMN_MAX)

    def _fit_table_height(self) -> None:
        """Tall enough for every row: the splitter gives the spare height to replies and chart."""
        t = self.table
        rows_h = sum(t.rowHeight(r) for r in range(t.rowCount()))
        extra = t.horizontalHeader().sizeHint().height() + 2 * t.frameWidth()
        if t.horizontalScrollBar().isVisible():
            extra += t.horizontalScrollBar().sizeHint().height()
        t.setMinimumHeight(min(rows_h + extra, 320))

    def _show_columns(self, report: CompareReport | None) -> None:
        """Task and error columns only when a row has something in them: the table stays narrow
        enough to read without scrolling in the usual one-prompt run."""
        table = rows(report) if report is not None else []
        for key in _OPTIONAL_COLUMNS:
            self.table.setColumnHidden(_col(key), all(r[key] is None for r in table))
        method = self.method_toggle.isChecked()
        for key in _METHOD_COLUMNS:
            self.table.setColumnHidden(_col(key), not method)

    # ---- inputs -----------------------------------------------------------------------------
    def set_models(self, models: list[str | Path]) -> None:
        """Replace the variants to compare (the Library's "compare variants of this model")."""
        self.model_list.clear()
        for m in models:
            item = QListWidgetItem(Path(m).name)
            item.setData(_PATH_ROLE, str(m))
            item.setToolTip(plain_tooltip(str(m)))
            self.model_list.addItem(item)
        self._refresh_reference()

    def models(self) -> list[str]:
        return [self.model_list.item(i).data(_PATH_ROLE) for i in range(self.model_list.count())]

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

    def add_menu(self) -> QMenu:
        """Library models to add: variants of the model already listed first, then the rest of
        the library, then any file (a file dialog)."""
        menu = QMenu(self)
        chosen = {str(Path(m)) for m in self.models()}
        try:
            library = self._context.library().list() if self._context is not None else []
        except Exception:  # a damaged library is reported on its page; files still work
            library = []
        present = [m for m in library if m.present and str(m.path) not in chosen]
        listed = [m for m in library if str(m.path) in chosen]
        same = [m for m in present if any(same_model(m, x) for x in listed)]
        others = [m for m in present if m not in same]
        if same:
            menu.addSection("Same model, in the Library")
            for m in same:
                self._add_model_action(menu, m)
        if others:
            menu.addSection("Other models in the Library" if listed else "In the Library")
            for m in others:
                self._add_model_action(menu, m)
        menu.addSeparator()
        menu.addAction("Choose a file…", self._add_files)
        return menu

    def _add_model_action(self, menu: QMenu, model: Any) -> None:
        label = f"{model.name} · {model.quant} · {human_bytes(model.size_bytes)}"
        path = str(model.path)
        action = menu.addAction(label, lambda: self.add_model(path))
        action.setToolTip(str(model.path))

    def add_model(self, path: str | Path) -> None:
        """Append one variant (ignored when it is listed already)."""
        if str(path) not in self.models():
            self.set_models([*self.models(), path])

    def _show_add_menu(self) -> None:
        menu = self.add_menu()
        menu.exec(self.add_button.mapToGlobal(self.add_button.rect().bottomLeft()))

    def _add_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add variants", "", "GGUF models (*.gguf)")
        self.set_models([*self.models(), *files])

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
            max_tokens=self.max_tokens.value(),
            threshold_pct=self.threshold.value(),
            workers=self._workers(),
        )
        reference = self.reference_box.currentData()
        self.report = None
        self._clear_results()
        self.status.setText("Reading the variants and planning memory…")
        self.run_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self._flush_timer.start()
        self._task.start(
            _work(models, prompt, self._prompt_file, reference, options, self._planner),
            "compare",
        )

    def stop(self) -> None:
        """Stop the run; the variants wind down and the figures measured so far are shown."""
        if self._task.current is not None:
            self._task.current.cancel()
            self.status.setText("Stopping…")

    @property
    def busy(self) -> bool:
        return self._task.busy

    def screenshot_setup(self) -> None:
        """``quantdesk screenshots``: a short real comparison of the first model in the library
        that has two or more variants (nothing runs when none has)."""
        if self.models() or self._context is None:
            return
        try:
            library = [m for m in self._context.library().list() if m.present]
        except Exception:  # a damaged library: the page stays empty, as for a user
            return
        for model in library:
            group = [m for m in library if same_model(m, model)]
            if len(group) >= 2:
                self.set_models([m.path for m in group[:3]])
                self.prompt_edit.setText("Describe a river in one sentence.")
                self.start(CompareOptions(max_tokens=24, reference_text_max_tokens=200))
                return

    def _workers(self) -> tuple[str, ...]:
        """The RPC workers listed in Settings (a variant's plan may split it over them)."""
        if self._context is None:
            return ()
        return tuple(w for w in self._context.settings.workers.split(",") if w.strip())

    def shutdown(self) -> None:
        self._task.cancel()

    def _clear_results(self) -> None:
        for pane in self.panes:
            box = pane.parentWidget()
            if box is not None:
                box.deleteLater()
        self.panes = []
        self._pending.clear()
        self._last_item.clear()
        self.table.setRowCount(0)
        self._show_columns(None)
        self._fit_columns()
        self.panes_hint.setVisible(True)
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
        elif isinstance(event, VariantLoaded):
            self._set_cell(event.index, "load_s", event.load_s)
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
        self._fit_table_height()
        self.panes_hint.setVisible(False)
        for i, v in enumerate(event.variants):
            ref = "  ·  reference" if i == event.reference_index else ""
            box = QFrame()
            box.setObjectName("card")
            box.setToolTip(plain_tooltip(str(v.path)))
            column = QVBoxLayout(box)
            column.setContentsMargins(10, 8, 10, 10)
            column.setSpacing(4)
            column.addWidget(PlainLabel(f"{v.quant}{ref}", name="cardTitle"))
            pane = QPlainTextEdit()
            pane.setReadOnly(True)
            pane.setFrameShape(QFrame.Shape.NoFrame)
            column.addWidget(pane, 1)
            self.pane_row.addWidget(box, 1)
            self.panes.append(pane)
            self._set_cell(i, "model", v.label, str(v.path))
            self._set_cell(i, "quant", v.quant)
            self._set_cell(i, "reference", i == event.reference_index)
            self._set_cell(i, "size_bytes", v.size_bytes)
        self._fit_columns()
        self.status.setText(f"Mode: {event.plan.mode} — {event.plan.reason}")

    def _flush(self) -> None:
        for index, pieces in self._pending.items():
            if pieces and index < len(self.panes):
                pane = self.panes[index]
                pane.moveCursor(QTextCursor.MoveOperation.End)
                pane.insertPlainText("".join(pieces))
                pieces.clear()

    def _set_cell(self, row: int, key: str, value: object, tip: str = "") -> None:
        item = QTableWidgetItem(value if isinstance(value, str) else format_cell(key, value))
        if tip:
            item.setToolTip(plain_tooltip(tip))
        self.table.setItem(row, _col(key), item)

    def _set_row_speed(self, event: ReplyDone) -> None:
        s = event.stats
        self._set_cell(event.index, "ttft_s", s.ttft_s)
        self._set_cell(event.index, "prompt_tok_s", s.prompt_tok_s)
        self._set_cell(event.index, "gen_tok_s", s.gen_tok_s)
        self._fit_columns()

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
            kld = headline_kld(row)
            verdict = quality_verdict(kld, bool(row["reference"]))
            number = "" if kld is None or row["reference"] else f" · {kld:.3f}"
            cell = QTableWidgetItem(verdict + number)
            cell.setToolTip(plain_tooltip(METHOD_TEXT))
            self.table.setItem(i, QUALITY_COLUMN, cell)
            size = row["size_bytes"] / 1e9  # GB, as every size in the app
            points.append(ChartPoint(row["quant"], size, row["gen_tok_s"], kld, row["reference"]))
        self._show_columns(report)
        self._fit_columns()
        self._fit_table_height()
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
