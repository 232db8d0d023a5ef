"""The Library page: the models on this computer, where they came from, and whether they fit.

A table lists every model of :class:`app.core.library.Library` (quant, size, fit badge, source,
SHA-256); the panel below it shows the selected model's full provenance and its actions: chat,
compare, delete, show in folder.  Import hashes a .gguf from disk off the GUI thread with a progress
bar (and a Cancel).  Fit badges are planned off the GUI thread at the default context with the
window's shared hardware profile and dry-run engine, the same figures the Models page uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint, Qt, QUrl
from PySide6.QtGui import QDesktopServices  # noqa: F401 - tests patch it here
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QMenu,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.cancel import CancelToken
from app.core.library import ImportProgress, Library, LibraryModel
from app.core.planning import MIN_CTX, ModelFit, Planner
from app.ui.bridge import LatestTask
from app.ui.dialogs import confirm
from app.ui.widgets.badges import BADGE_ROLE, BadgeDelegate, badge_text
from app.ui.widgets.cards import Card, PageHeader, PlainLabel, plain_tooltip
from app.ui.widgets.format import human_bytes
from app.ui.widgets.reveal import PathDialog, copy_text, reveal

COLUMNS = ["Model", "Quant", "Size", "Fit here", "Source", "SHA-256", "Added"]
SOURCE_COLUMN = 4
FIT_COLUMN = COLUMNS.index("Fit here")
ID_ROLE = Qt.ItemDataRole.UserRole


def same_model(a: LibraryModel, b: LibraryModel) -> bool:
    """Variants of one model: the same Hub repo, or (imported) the same folder and architecture."""
    if a.repo_id or b.repo_id:
        return a.repo_id == b.repo_id
    return a.path.parent == b.path.parent and a.architecture == b.architecture


def provenance(model: LibraryModel) -> str:
    """Where a model came from, in a few words."""
    if model.source == "hub" and model.repo_id:
        commit = f" @ {model.commit[:10]}" if model.commit else ""
        return f"{model.repo_id}{commit}"
    return "imported from disk"


def _plan_at_load_context(
    planner: Planner, models: list[LibraryModel], n_ctx: int, token: CancelToken
) -> Iterator[ModelFit]:
    """Each model's fit at the context Chat loads it with: the settings' default, capped at the
    context the model was trained for (as :meth:`Planner.plan_load` does)."""
    for model in models:
        want = n_ctx
        if model.present:
            try:
                trained = planner.spec(model.path).n_ctx_train
            except Exception:  # an unreadable header: plan_library says why on the row
                trained = 0
            want = max(MIN_CTX, min(n_ctx, int(trained or n_ctx)))
        yield from planner.plan_library([model], want, token)


class LibraryPage(QWidget):
    """Local models with provenance and fit; import, chat, compare, delete, open folder."""

    def __init__(self, context: Any) -> None:
        super().__init__()
        self.context = context
        self.settings = context.settings
        self.models: list[LibraryModel] = []
        self.fits: dict[int, ModelFit] = {}
        self._planner = LatestTask(context.runner, self)
        self._planner.item_produced.connect(self._on_fit)
        self._importer = LatestTask(context.runner, self)
        self._importer.item_produced.connect(self._on_import_progress)
        self._importer.finished.connect(self._on_import_finished)
        self._importer.failed.connect(self._on_import_failed)

        header = PageHeader(
            "Library", "Models on this computer, where they came from, and how they fit."
        )
        self.import_button = header.add_action(QPushButton("Import .gguf…"))
        self.import_button.clicked.connect(self._choose_import)
        self.folder_button = header.add_action(QPushButton("Open folder"))
        self.folder_button.clicked.connect(lambda: self.open_folder())
        self.refresh_button = header.add_action(QPushButton("Refresh"))
        self.refresh_button.clicked.connect(self.refresh)

        self.progress = QProgressBar()
        self.progress.setFormat("Hashing %p%")
        self.cancel_import_button = QPushButton("Cancel import")
        self.cancel_import_button.clicked.connect(self._importer.cancel)
        self.message = PlainLabel("", name="muted")
        self.message.setWordWrap(True)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.cancel_import_button)
        self._show_import(False)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setItemDelegateForColumn(FIT_COLUMN, BadgeDelegate(self.table))
        head = self.table.horizontalHeader()
        head.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(COLUMNS)):
            head.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        # Source names can be long ("hf: org/very-long-repo-GGUF"): a fixed, elided column with
        # the whole text in the tooltip keeps every column on screen at 900 px.
        head.setSectionResizeMode(SOURCE_COLUMN, QHeaderView.ResizeMode.Interactive)
        head.resizeSection(SOURCE_COLUMN, 150)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.setWordWrap(False)
        self.table.itemSelectionChanged.connect(self._show_details)
        self.table.doubleClicked.connect(lambda _i: self.chat_selected())
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._on_context_menu)
        self.path_dialog: PathDialog | None = None
        self.empty = PlainLabel(
            "No models yet. Download one from the Models page, or import a .gguf file.",
            name="muted",
        )

        self.details = Card("Details")
        self.detail_labels: dict[str, PlainLabel] = {}
        form = QFormLayout()
        for key in ("File", "Source", "Commit", "SHA-256", "Architecture", "Fit"):
            label = PlainLabel("")
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.detail_labels[key] = label
            form.addRow(key, label)
        self.details.add(form)
        self.chat_button = QPushButton("Chat")
        self.chat_button.setObjectName("primary")
        self.chat_button.clicked.connect(self.chat_selected)
        self.compare_button = QPushButton("Compare")
        self.compare_button.clicked.connect(self.compare_selected)
        self.show_button = QPushButton("Show in folder")
        self.show_button.clicked.connect(lambda: self.open_folder(self.selected()))
        self.delete_button = QPushButton("Delete…")
        self.delete_button.clicked.connect(self._ask_delete)
        actions = QHBoxLayout()
        for b in (self.chat_button, self.compare_button, self.show_button, self.delete_button):
            actions.addWidget(b)
        actions.addStretch(1)
        self.details.add(actions)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        layout.addWidget(header)
        layout.addLayout(progress_row)
        layout.addWidget(self.message)
        layout.addWidget(self.empty)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.details)

        events = getattr(context, "events", None)
        if events is not None:
            events.library_changed.connect(self.refresh)
            events.settings_changed.connect(self.refresh)
        self.refresh()

    # ---- listing ------------------------------------------------------------------------
    def library(self) -> Library:
        return Library(folder=self.settings.library_path())

    def refresh(self) -> None:
        """Re-read the library and re-plan the fit badges in the background."""
        chosen = self.selected()
        try:
            self.models = self.library().list()
        except Exception as exc:  # a damaged database: say so, keep the page usable
            self.models = []
            self.message.setText(f"Could not read the library: {exc}")
        self.fits = {k: v for k, v in self.fits.items() if any(m.id == k for m in self.models)}
        self.table.setRowCount(len(self.models))
        for row, model in enumerate(self.models):
            self._fill_row(row, model)
        # As wide as the longest source up to a cap; past it, elided with the tooltip.
        self.table.resizeColumnToContents(SOURCE_COLUMN)
        self.table.setColumnWidth(SOURCE_COLUMN, min(self.table.columnWidth(SOURCE_COLUMN), 230))
        self.empty.setVisible(not self.models)
        self.table.setVisible(bool(self.models))
        if chosen is not None:
            self.select(chosen.path)
        elif self.models:
            self.table.selectRow(0)
        self._show_details()
        models, n_ctx = list(self.models), self.settings.default_n_ctx
        if models:
            planner = self.context.planner
            self._planner.start(
                lambda t: _plan_at_load_context(planner, models, n_ctx, t), "library fits"
            )

    def _fill_row(self, row: int, model: LibraryModel) -> None:
        sha = model.sha256[0] if model.sha256 else ""
        cells = [
            model.name,
            model.quant,
            human_bytes(model.size_bytes),
            "",
            provenance(model),
            sha[:12] + "…" if sha else "",
            model.added_at.replace("T", " ")[:16],
        ]
        for col, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setData(ID_ROLE, model.id)
            if col == 0:
                item.setToolTip(plain_tooltip(str(model.path)))
            if col == 5:
                item.setToolTip(plain_tooltip("\n".join(model.sha256)))
            if col == SOURCE_COLUMN:
                item.setToolTip(plain_tooltip(text))
            self.table.setItem(row, col, item)
        self._show_fit(row, model)

    def _show_fit(self, row: int, model: LibraryModel) -> None:
        item = self.table.item(row, FIT_COLUMN)
        fit = self.fits.get(model.id)
        if not model.present:
            badge, tip = ("no_fit", "File missing"), "The file was moved or deleted."
        elif fit is None:
            badge, tip = ("unknown", badge_text("unknown")), ""
        elif fit.fit is None:
            badge, tip = ("unknown", "Unknown"), fit.error
        else:
            plan = fit.fit.offload.plan
            verdict = fit.fit.verdict
            badge = (verdict, badge_text(verdict, plan.n_gpu_layers, plan.n_layers_total))
            tip = fit.fit.offload.reason
        if item is None:  # the row was removed while its plan was on the way
            return
        item.setData(BADGE_ROLE, badge)
        item.setText(badge[1])
        item.setToolTip(plain_tooltip(tip))

    def _on_fit(self, fit: ModelFit) -> None:
        self.fits[fit.model_id] = fit
        for row, model in enumerate(self.models):
            if model.id == fit.model_id:
                self._show_fit(row, model)
        self._show_details()

    # ---- selection ----------------------------------------------------------------------
    def selected(self) -> LibraryModel | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        cell = self.table.item(rows[0].row(), 0)
        if cell is None:
            return None
        model_id = cell.data(ID_ROLE)
        return next((m for m in self.models if m.id == model_id), None)

    def select(self, path: str | Path) -> bool:
        for row, model in enumerate(self.models):
            if Path(model.path) == Path(path):
                self.table.selectRow(row)
                return True
        return False

    def _show_details(self) -> None:
        model = self.selected()
        self.details.setVisible(model is not None)
        if model is None:
            return
        hub = model.source == "hub" and model.repo_id
        fit = self.fits.get(model.id)
        values = {
            "File": "\n".join(str(p) for p in model.files),
            "Source": f"Hugging Face: {model.repo_id} ({model.hub_file})" if hub else "Imported",
            "Commit": model.commit or "–",
            "SHA-256": "\n".join(model.sha256),
            "Architecture": model.architecture or "–",
            "Fit": (
                f"{fit.fit.offload.reason} (context {fit.fit.offload.plan.n_ctx})"
                if fit and fit.fit
                else (fit.error if fit else "planning…")
            ),
        }
        if not model.present:
            values["Fit"] = "The file is missing: it was moved or deleted outside QuantDesk."
        for key, text in values.items():
            self.detail_labels[key].setText(text)
        self.chat_button.setEnabled(model.present)
        self.compare_button.setEnabled(model.present)

    # ---- actions ------------------------------------------------------------------------
    def chat_selected(self) -> None:
        model = self.selected()
        if model is None or not model.present:
            return
        self.context.commands.chat_with(model.path)

    def compare_selected(self) -> None:
        """Open the Compare page with this model and its other variants in the library."""
        model = self.selected()
        if model is None:
            return
        variants = [m for m in self.models if m.present and same_model(m, model)]
        self.context.commands.open_compare([m.path for m in variants])

    def delete(self, model: LibraryModel) -> list[Path]:
        """Forget a model; its files go too when they live in the library folder."""
        try:
            deleted = self.library().remove(model)
        except OSError as exc:
            self.message.setText(f"Could not delete {model.name}: {exc}")
            return []
        self.message.setText(
            f"Deleted {model.name}."
            if deleted
            else f"Removed {model.name} from the library "
            "(the file outside the library folder was left where it is)."
        )
        self._announce()
        return deleted

    def _ask_delete(self) -> None:
        model = self.selected()
        if model is None:
            return
        answer = confirm(
            self,
            "Delete model",
            f"Delete {model.name} ({human_bytes(model.size_bytes)})?\n\n"
            "Files inside the library folder are deleted from disk; imported files elsewhere are "
            "only removed from the list.",
        )
        if answer:
            self.delete(model)

    def open_folder(self, model: LibraryModel | None = None) -> QUrl:
        """Show the library folder (or the model's folder) in the system's file manager; without
        one, a small window shows the path with a Copy button (``self.path_dialog``)."""
        folder = model.path.parent if model is not None else self.settings.library_path()
        self.path_dialog = reveal(Path(folder), self)
        return QUrl.fromLocalFile(str(folder))

    def context_menu(self, row: int) -> QMenu | None:
        """The right-click menu of a row: copy path, show in folder, chat, delete."""
        if not 0 <= row < len(self.models):
            return None
        self.table.selectRow(row)
        model = self.models[row]
        menu = QMenu(self)
        menu.addAction("Copy path", lambda: copy_text(str(model.path)))
        menu.addAction("Show in folder", lambda: self.open_folder(model))
        chat = menu.addAction("Chat", self.chat_selected)
        chat.setEnabled(model.present)
        menu.addSeparator()
        menu.addAction("Delete…", self._ask_delete)
        return menu

    def _on_context_menu(self, pos: QPoint) -> None:
        menu = self.context_menu(self.table.indexAt(pos).row())
        if menu is not None:
            menu.exec(self.table.viewport().mapToGlobal(pos))

    # ---- import -------------------------------------------------------------------------
    def _choose_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import a GGUF model", str(Path.home()), "GGUF models (*.gguf)"
        )
        if path:
            self.import_file(path)

    def import_file(self, path: str | Path) -> None:
        """Hash and add a .gguf from disk (kept where it is) in the background."""
        if self._importer.busy:
            self.message.setText("An import is already running.")
            return
        library = self.library()
        self._import_name = Path(path).name
        self._imported: LibraryModel | None = None
        self.progress.setValue(0)
        self._show_import(True)
        self.message.setText(f"Importing {self._import_name}…")
        self._importer.start(lambda t: library.import_file(Path(path), cancel=t), "import")

    def _show_import(self, on: bool) -> None:
        self.progress.setVisible(on)
        self.cancel_import_button.setVisible(on)
        self.import_button.setEnabled(not on)

    def _on_import_progress(self, step: ImportProgress) -> None:
        if step.bytes_total:
            self.progress.setValue(int(100 * step.bytes_done / step.bytes_total))
        if step.state == "checking":
            self.progress.setFormat("Checking…")
        if step.state == "done":
            self._imported = step.model
        if step.state == "cancelled":
            self.message.setText(f"Import of {self._import_name} cancelled; nothing was added.")

    def _on_import_finished(self) -> None:
        self._show_import(False)
        self.progress.setFormat("Hashing %p%")
        model = self._imported
        if model is None:
            return
        self.message.setText(
            f"Imported {model.name} ({model.quant}, SHA-256 {model.sha256[0][:12]}…)."
        )
        self._announce()
        self.select(model.path)

    def _on_import_failed(self, message: str, _exc: object) -> None:
        self._show_import(False)
        self.message.setText(f"Could not import {self._import_name}: {message}")

    def _announce(self) -> None:
        events = getattr(self.context, "events", None)
        if events is not None:
            events.library_changed.emit()  # this page refreshes through it too
        else:
            self.refresh()

    def shutdown(self) -> None:
        self._planner.cancel()
        self._importer.cancel()

    def page_shown(self) -> None:
        if not self._planner.busy and any(m.id not in self.fits for m in self.models):
            self.refresh()
