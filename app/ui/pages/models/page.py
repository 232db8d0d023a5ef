"""The Models page: the curated catalog and Hub search, a repo's variants with fit badges, details.

Left: a search box and a list of repos (the curated ``resources/catalog.json`` until you search).
Right: the selected repo's variants, each planned at the context chosen with the slider -- a fit
badge, the largest context that fits, the recommended one starred -- and a details panel with the
memory of the selected variant per device.  Searching, listing and planning all run off the GUI
thread; a newer request supersedes an older one, whose results are dropped (LatestTask).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSlider,
    QSplitter,
    QStackedWidget,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core import hub
from app.core.cancel import CancelToken
from app.core.hub import RepoSummary, Variant
from app.core.library import LibraryModel
from app.core.planning import PlannedVariant, RepoAdvice, advise, speed_rule
from app.core.speed import SpeedRule
from app.ui.bridge import LatestTask
from app.ui.context import AppContext
from app.ui.pages.models.details import VariantDetails
from app.ui.pages.models.table import COL_ACTION, COL_FILE, COL_FIT, COL_QUANT, VariantTableModel
from app.ui.widgets.badges import BadgeDelegate, FitBadge
from app.ui.widgets.cards import Card, PageHeader, PlainLabel, muted, plain_tooltip
from app.ui.widgets.format import human_bytes, human_count
from app.ui.widgets.lists import SUBTITLE_ROLE, TwoLineDelegate


@dataclass(frozen=True)
class _Rule:
    """The speed rule the plans below are decided by, sent ahead of them."""

    rule: SpeedRule


CONTEXT_STOPS = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]
REPO_ROLE = Qt.ItemDataRole.UserRole + 10


def _repo_subtitle(repo: RepoSummary) -> str:
    parts = []
    if repo.publisher:
        parts.append(repo.publisher)
    if repo.params_b:
        parts.append(f"{repo.params_b:g}B parameters")
    if repo.downloads:
        parts.append(f"{repo.downloads:,} downloads")
    if repo.gated:
        parts.append("gated")
    return " · ".join(parts) or repo.summary


def _default_context(context: AppContext) -> int:
    """The stop of the slider nearest the default context of the settings."""
    wanted = context.settings.default_n_ctx
    return min(CONTEXT_STOPS, key=lambda c: abs(c - wanted))


class ModelsPage(QWidget):
    """Browse models and see, per variant, whether and how it runs on this computer."""

    def __init__(self, context: AppContext) -> None:
        super().__init__()
        self.context = context
        self.repo: str | None = None
        self._search_text = ""
        self.advice: RepoAdvice | None = None
        self.search_task = LatestTask(context.runner, self)
        self.variants_task = LatestTask(context.runner, self)
        self.plan_task = LatestTask(context.runner, self)
        self.ask_confirmation = self._ask_confirmation  # tests may replace the dialog
        self._rule: SpeedRule | None = None  # the speed rule of the current plans
        self.speeds: dict[str, float] = {}  # file -> estimated tokens/s under the speed rule
        self._downloading: set[str] = set()  # files this page sent to Downloads, until they land
        self._replan_timer = QTimer(self, singleShot=True, interval=150)
        self._replan_timer.timeout.connect(self.replan)
        self._build()
        self.search_task.item_produced.connect(self._on_search_results)
        self.search_task.failed.connect(self._on_search_failed)
        self.variants_task.item_produced.connect(self._on_variants)
        self.variants_task.failed.connect(self._on_variants_failed)
        self.plan_task.item_produced.connect(self._on_plan_item)
        self.plan_task.failed.connect(self._on_plan_failed)
        self.show_catalog()
        context.events.library_changed.connect(self._refresh_local_state)
        context.events.hardware_changed.connect(self.replan)  # new free-memory figures
        context.events.settings_changed.connect(self._on_settings_changed)

    # --- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(20, 16, 20, 16)
        outer.addWidget(
            PageHeader(
                "Models",
                "Pick a model: every variant is checked against this computer before you download.",
            )
        )
        splitter = QSplitter(Qt.Orientation.Horizontal)
        self.left_panel = self._build_left()
        splitter.addWidget(self.left_panel)
        splitter.addWidget(self._build_right())
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([300, 900])
        self.splitter = splitter
        outer.addWidget(splitter, 1)

    def _build_left(self) -> QWidget:
        left = QWidget()
        column = QVBoxLayout(left)
        column.setContentsMargins(0, 0, 8, 0)
        self.search_box = QLineEdit()
        self.search_box.setPlaceholderText("Search Hugging Face for GGUF models…")
        self.search_box.setClearButtonEnabled(True)
        self.search_box.returnPressed.connect(self.search)
        column.addWidget(self.search_box)
        self.list_status = muted("Curated models")
        column.addWidget(self.list_status)
        self.repo_list = QListWidget()
        self.repo_list.setItemDelegate(TwoLineDelegate(self.repo_list))
        self.repo_list.setUniformItemSizes(True)
        self.repo_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.repo_list.currentItemChanged.connect(self._on_repo_selected)
        column.addWidget(self.repo_list, 1)
        self.catalog_button = QPushButton("Show curated models")
        self.catalog_button.clicked.connect(self.show_catalog)
        self.catalog_button.hide()
        column.addWidget(self.catalog_button)
        return left

    def _build_right(self) -> QWidget:
        self.right = QStackedWidget()
        self.right.addWidget(self._build_legend())

        panel = QWidget()
        column = QVBoxLayout(panel)
        column.setContentsMargins(8, 0, 0, 0)
        self.repo_title = PlainLabel("", name="cardTitle")
        self.repo_title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.repo_subtitle = muted()
        title_row = QHBoxLayout()
        self.list_toggle = QToolButton()
        self.list_toggle.setText("◀")
        self.list_toggle.setToolTip("Hide the list of models (more room for the variants)")
        self.list_toggle.setCheckable(True)
        self.list_toggle.toggled.connect(self._on_list_toggled)
        title_row.addWidget(self.list_toggle)
        title_row.addWidget(self.repo_title, 1)
        self.compare_button = QPushButton("Compare downloaded variants")
        self.compare_button.setToolTip(
            "Run the variants of this model you have downloaded side by side: speed, memory and "
            "measured quality loss"
        )
        self.compare_button.clicked.connect(self.compare_downloaded)
        title_row.addWidget(self.compare_button)
        column.addLayout(title_row)
        column.addWidget(self.repo_subtitle)

        ctx_row = QHBoxLayout()
        ctx_row.addWidget(PlainLabel("Context"))
        self.ctx_slider = QSlider(Qt.Orientation.Horizontal)
        self.ctx_slider.setRange(0, len(CONTEXT_STOPS) - 1)
        self.ctx_slider.setPageStep(1)
        self.ctx_slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.ctx_slider.setValue(CONTEXT_STOPS.index(_default_context(self.context)))
        self.ctx_slider.setMaximumWidth(320)
        self.ctx_slider.valueChanged.connect(self._on_context_changed)
        ctx_row.addWidget(self.ctx_slider)
        self.ctx_label = PlainLabel("")
        self.ctx_label.setMinimumWidth(90)
        ctx_row.addWidget(self.ctx_label)
        ctx_row.addStretch(1)
        self.plan_status = muted("", wrap=True)
        ctx_row.addWidget(self.plan_status)
        column.addLayout(ctx_row)
        self._update_ctx_label()

        self.table_model = VariantTableModel()
        self.table = QTableView()
        self.table.setModel(self.table_model)
        self.table.setItemDelegateForColumn(COL_FIT, BadgeDelegate(self.table))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setDefaultSectionSize(34)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COL_QUANT, QHeaderView.ResizeMode.Stretch)
        # The file name is long and the same for every row but the quant: it lives in the
        # tooltip and the details panel instead of an elided column.
        self.table.setColumnHidden(COL_FILE, True)
        header.setSectionResizeMode(COL_ACTION, QHeaderView.ResizeMode.Fixed)
        header.resizeSection(COL_ACTION, 100)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setWordWrap(False)
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._show_details())
        self.details = VariantDetails()
        self.details.download_requested.connect(self.request_download)
        self.details.show_local_requested.connect(self._on_row_button)
        # Table above, details below, the line between them draggable; the details scroll when
        # the window is short (900x600) instead of squeezing the table to two rows.
        details_scroll = QScrollArea()
        details_scroll.setWidgetResizable(True)
        details_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        details_scroll.setWidget(self.details)
        details_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table_split = QSplitter(Qt.Orientation.Vertical)
        self.table_split.setChildrenCollapsible(False)
        self.table_split.addWidget(self.table)
        self.table_split.addWidget(details_scroll)
        self.table.setMinimumHeight(120)
        self.table_split.setStretchFactor(0, 2)
        self.table_split.setStretchFactor(1, 3)
        column.addWidget(self.table_split, 1)
        self.right.addWidget(panel)
        return self.right

    def _build_legend(self) -> QWidget:
        """Before a repo is chosen: what the badges mean."""
        holder = QWidget()
        column = QVBoxLayout(holder)
        column.setContentsMargins(8, 0, 0, 0)
        card = Card("Select a model on the left to see its variants")
        card.add(
            muted(
                "Each variant is planned against this computer at the context you choose, from "
                "its GGUF header alone: nothing is downloaded until you click Download."
            )
        )
        legend = [
            ("full_gpu", "Everything runs in GPU memory (or unified memory on a Mac): fastest."),
            ("partial_gpu", "Some layers on the GPU, the rest on the CPU: slower, but it runs."),
            ("cpu", "Runs on the CPU from system RAM."),
            ("no_fit", "Needs more memory than this computer has free at this context."),
        ]
        for verdict, words in legend:
            row = QHBoxLayout()
            badge = FitBadge(verdict)
            badge.setFixedWidth(110)
            row.addWidget(badge)
            row.addWidget(muted(words), 1)
            card.add(row)
        card.add(muted("★ marks the recommended variant; the details panel explains why."))
        column.addWidget(card)
        column.addStretch(1)
        return holder

    # --- repo list ------------------------------------------------------------------------------
    def show_catalog(self) -> None:
        self.search_task.cancel()
        try:
            repos = hub.catalog()
            self.list_status.setText("Curated models — or search the Hub above")
        except (OSError, ValueError, KeyError) as exc:
            repos = []
            self.list_status.setText(f"The curated list could not be read: {exc}")
        self._fill_repo_list(repos)
        self.catalog_button.hide()

    def search(self) -> None:
        text = self.search_box.text().strip()
        if not text:
            self.show_catalog()
            return
        self.list_status.setText(f"Searching for “{text}”…")
        self._search_text = text
        self.search_task.start(lambda _token: hub.search(text), name="hub-search")

    def _on_search_results(self, repos: list[RepoSummary]) -> None:
        text = self._search_text
        n = len(repos)
        self.list_status.setText(
            f"{n} GGUF repo{'s' if n != 1 else ''} for “{text}”"
            if n
            else f"Nothing found for “{text}”"
        )
        self._fill_repo_list(repos)
        self.catalog_button.show()

    def _on_search_failed(self, message: str, exc: object) -> None:
        self.list_status.setText(f"Search failed: {message}")
        self.catalog_button.show()

    def _fill_repo_list(self, repos: list[RepoSummary]) -> None:
        self.repo_list.blockSignals(True)
        self.repo_list.clear()
        for repo in repos:
            item = QListWidgetItem(repo.repo_id)
            item.setData(SUBTITLE_ROLE, _repo_subtitle(repo))
            item.setData(REPO_ROLE, repo)
            item.setToolTip(
                plain_tooltip(
                    "\n".join(filter(None, [repo.repo_id, _repo_subtitle(repo), repo.summary]))
                )
            )
            self.repo_list.addItem(item)
        self.repo_list.blockSignals(False)

    def _on_list_toggled(self, hidden: bool) -> None:
        self.left_panel.setVisible(not hidden)
        self.list_toggle.setText("▶" if hidden else "◀")
        self.list_toggle.setToolTip(
            "Show the list of models" if hidden else "Hide the list of models (more room)"
        )

    def _on_repo_selected(self, item: QListWidgetItem | None, _previous: object = None) -> None:
        if item is not None:
            self.open_repo(item.data(REPO_ROLE))

    # --- variants and plans ------------------------------------------------------------------
    def open_repo(self, repo: RepoSummary | str) -> None:
        """Show a repo's variants (listed off-thread) and plan them at the chosen context."""
        summary = repo if isinstance(repo, RepoSummary) else RepoSummary(repo)
        self.repo = summary.repo_id
        self.right.setCurrentIndex(1)
        self.repo_title.setText(summary.repo_id)
        self.repo_subtitle.setText(summary.summary or _repo_subtitle(summary))
        self.table_model.set_variants([])
        self.ctx_slider.setMaximum(len(CONTEXT_STOPS) - 1)  # the new repo's header sets its end
        self.details.clear("Listing the variants…")
        self.plan_task.cancel()
        self.plan_status.setText("Listing variants…")
        repo_id = summary.repo_id
        self._refresh_local_state()
        self.variants_task.start(lambda _token: hub.list_variants(repo_id), name="hub-variants")

    def _on_variants(self, variants: list[Variant]) -> None:
        self.table_model.set_variants(variants)
        for row, variant in enumerate(variants):
            button = QPushButton("Download")
            button.setObjectName("rowButton")
            button.setToolTip(
                plain_tooltip(f"Download {variant.file} ({human_bytes(variant.size_bytes)})")
            )
            button.clicked.connect(lambda _=False, v=variant: self._on_row_button(v))
            self.table.setIndexWidget(self.table_model.index(row, COL_ACTION), button)
        self._refresh_local_state()
        if not variants:
            self.plan_status.setText("")
            self.details.clear("This repo has no GGUF files.")
            return
        self.replan()

    def _on_variants_failed(self, message: str, exc: object) -> None:
        self.plan_status.setText("")
        if isinstance(exc, hub.OfflineError):
            self.details.show_error(
                f"The Hub cannot be reached ({message}). Models already downloaded are in the "
                "Library and work offline.",
                retry=self.retry_repo,
                headline="You are offline",
            )
            return
        self.details.show_error(f"Could not list the variants: {message}", retry=self.retry_repo)

    def retry_repo(self) -> None:
        if self.repo:
            self.open_repo(self.repo)

    @property
    def n_ctx(self) -> int:
        return CONTEXT_STOPS[self.ctx_slider.value()]

    def set_context(self, n_ctx: int) -> None:
        self.ctx_slider.setValue(CONTEXT_STOPS.index(n_ctx))

    def _update_ctx_label(self) -> None:
        self.ctx_label.setText(f"{human_count(self.n_ctx)} tokens")

    def _on_context_changed(self) -> None:
        self._update_ctx_label()
        self.table_model.clear_fits()
        self.details.clear("Planning…")
        # Dragging the slider sends many values; plan only where it rests.
        self._replan_timer.start()

    def replan(self) -> None:
        """Plan every variant at the current context (off-thread; a running plan is superseded)."""
        variants = list(self.table_model.variants)
        if not variants:
            return
        self.table_model.clear_fits()
        self.advice = None
        n_ctx = self.n_ctx
        self.plan_status.setText(f"Checking {len(variants)} variants at {human_count(n_ctx)}…")
        self._planned = 0
        planner = self.context.planner

        local = {file: m.path for file, m in self._local_models().items()}

        min_tok_s = self.context.settings.min_tokens_per_s
        workers = [w for w in self.context.settings.workers.split(",") if w.strip()]

        def work(token: CancelToken) -> Iterator[object]:
            rule = speed_rule(min_tok_s, dict(local))  # the bandwidth is measured once, cached
            yield _Rule(rule)
            yield from planner.plan_variants(variants, n_ctx, token, speed=rule, workers=workers)

        self.plan_task.start(work, name="plan-repo")

    def _cap_context(self, n_ctx_train: int) -> None:
        """The slider ends at the context the model was trained for (its largest stop not past it)."""
        if n_ctx_train <= 0:
            return
        top = max([i for i, c in enumerate(CONTEXT_STOPS) if c <= n_ctx_train] or [0])
        if top != self.ctx_slider.maximum():
            self.ctx_slider.setMaximum(top)  # clamps the value, which re-plans at the new end

    def _on_settings_changed(self) -> None:
        """A new minimum speed re-decides the recommendation over the plans already made."""
        if self._rule is None or self.advice is None or self.plan_task.busy:
            return
        self._rule = replace(self._rule, min_tok_s=self.context.settings.min_tokens_per_s)
        fits = [f.fit for f in self.table_model.fits.values() if f.fit is not None]
        budget = next((f.budget for f in self.table_model.fits.values() if f.budget), None)
        if fits and budget is not None:
            self._on_plan_item(
                advise(fits, budget, self.advice.n_ctx, self._rule, self.advice.warnings)
            )

    def speed_rule(self) -> SpeedRule | None:
        """The rule the current plans were decided by (Settings: minimum tokens/s)."""
        return self._rule

    def _on_plan_item(self, item: PlannedVariant | RepoAdvice | _Rule) -> None:
        if isinstance(item, _Rule):
            self._rule = item.rule
            return
        if isinstance(item, PlannedVariant):
            self._cap_context(item.n_ctx_train)
            self.table_model.set_fit(item)
            self._planned += 1
            total = len(self.table_model.variants)
            self.plan_status.setText(f"Checked {self._planned} of {total}…")
            if self._selected_row() == self.table_model.row_of(item.variant.file):
                self._show_details()
            return
        self.advice = item
        fits = [f.fit for f in self.table_model.fits.values() if f.fit is not None]
        rule = self._rule
        self.speeds = {f.file: rule.rate(f.file, f.offload.plan) for f in fits} if rule else {}
        self.table_model.speeds = dict(self.speeds)
        self.table_model.measured = set(rule.measured) if rule else set()
        self.table_model.set_recommended(item.recommended)
        self.plan_status.setText(f"Planned at {human_count(item.n_ctx)} tokens of context")
        row = self.table_model.row_of(item.recommended) if item.recommended else None
        if row is not None and self._selected_row() is None:
            self.table.selectionModel().setCurrentIndex(
                self.table_model.index(row, COL_QUANT),
                QItemSelectionModel.SelectionFlag.ClearAndSelect
                | QItemSelectionModel.SelectionFlag.Rows,
            )
        self._show_details()

    def _on_plan_failed(self, message: str, exc: object) -> None:
        self.plan_status.setText("")
        self.details.show_error(f"Planning failed: {message}", retry=self.replan)

    def _selected_row(self) -> int | None:
        index = self.table.selectionModel().currentIndex()
        return index.row() if index.isValid() else None

    def _show_details(self) -> None:
        row = self._selected_row()
        if row is None:
            if self.advice is not None:
                self.details.show_advice_only(self.advice)
            return
        variant = self.table_model.variants[row]
        local = variant.file in self._local_models()
        self.details.show_variant(variant, self.table_model.fit_at(row), self.advice, local)

    # --- what is already downloaded ---------------------------------------------------------
    def _local_models(self) -> dict[str, LibraryModel]:
        """Library models of the open repo, by their Hub file name."""
        if not self.repo:
            return {}
        try:
            models = self.context.library().list()
        except Exception:  # a damaged database is reported by the Library page
            return {}
        return {
            m.hub_file: m for m in models if m.repo_id == self.repo and m.hub_file and m.present
        }

    def downloaded_variants(self) -> list[Path]:
        """Library files of the open repo (one per variant)."""
        return [m.path for m in self._local_models().values()]

    def _refresh_local_state(self) -> None:
        """Row buttons say "In library" for downloaded variants; Compare needs two of them."""
        local = self._local_models()
        for row, variant in enumerate(self.table_model.variants):
            button = self.table.indexWidget(self.table_model.index(row, COL_ACTION))
            if isinstance(button, QPushButton):
                button.setText("In library" if variant.file in local else "Download")
        landed = sorted(f for f in self._downloading if f in local)
        if landed:
            self._downloading.difference_update(landed)
            self.plan_status.setText(f"{', '.join(landed)} is in the Library now")
        if self.details.variant is not None and self.details.local != (
            self.details.variant.file in local
        ):
            self._show_details()
        n = len(local)
        self.compare_button.setEnabled(n >= 2)
        self.compare_button.setText(
            f"Compare {n} downloaded variants" if n >= 2 else "Compare downloaded variants"
        )

    def compare_downloaded(self) -> None:
        paths = self.downloaded_variants()
        if len(paths) < 2:
            return
        self.context.commands.open_compare(list(paths))

    # --- downloads ----------------------------------------------------------------------------
    def _on_row_button(self, variant: Variant) -> None:
        model = self._local_models().get(variant.file)
        if model is None:
            self.request_download(variant)
            return
        self.context.commands.reveal_in_library(model.path)

    def request_download(self, variant: Variant) -> None:
        """Queue a download on the Downloads page; ask first when the variant does not fit."""
        fit = self.table_model.fits.get(variant.file)
        too_big = fit is not None and fit.offload is not None and fit.offload.verdict == "no_fit"
        if fit is not None and too_big and not self.ask_confirmation(variant, fit):
            return
        self.context.commands.start_download(variant)
        self._downloading.add(variant.file)
        self.plan_status.setText(f"Downloading {variant.file} — see Downloads")

    def _ask_confirmation(self, variant: Variant, fit: PlannedVariant) -> bool:
        reason = fit.offload.reason if fit.offload is not None else ""
        answer = QMessageBox.warning(
            self,
            "This variant does not fit",
            f"{variant.file} does not fit this computer at {human_count(fit.n_ctx)} tokens of "
            f"context: {reason}.\n\nDownload it anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    # --- hooks ----------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return (
            self.search_task.busy
            or self.variants_task.busy
            or self.plan_task.busy
            or self._replan_timer.isActive()
        )

    def screenshot_setup(self, repo: str | None = None) -> None:
        if repo:
            self.open_repo(repo)
        elif self.repo_list.count():
            self.repo_list.setCurrentRow(0)
