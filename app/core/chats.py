"""Conversations and their messages, kept in the app's one SQLite file.

:class:`ChatStore` owns the tables ``chat_conversations``, ``chat_messages`` and ``chat_meta``
(other parts of QuantDesk keep their own tables in the same file).  Roles are ``system``, ``user``,
``assistant`` and ``error``: an error message records an engine failure in the conversation for the
user to see and is never sent back to the model (see :func:`engine_messages`).

A store is used from one thread at a time (the GUI thread); its writes are small and SQLite runs in
WAL mode so readers in other parts of the app are not blocked.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core import paths

ROLES = ("system", "user", "assistant", "error")
DEFAULT_TITLE = "New chat"
_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chat_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chat_conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    model_path TEXT,
    system_prompt TEXT NOT NULL DEFAULT '',
    options TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS chat_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES chat_conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at REAL NOT NULL,
    stats TEXT
);
CREATE INDEX IF NOT EXISTS chat_messages_by_conversation ON chat_messages(conversation_id, id);
"""


class ChatStoreError(Exception):
    """A stored conversation could not be read or written (the message says why)."""


@dataclass
class Conversation:
    """One conversation's header; ``options`` holds per-chat overrides (sampling, n_ctx...)."""

    id: int
    title: str
    created_at: float
    updated_at: float
    model_path: str | None = None
    system_prompt: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Message:
    """One message; ``stats`` holds a reply's GenerationStats as a dict (or None)."""

    id: int
    conversation_id: int
    role: str
    content: str
    created_at: float
    stats: dict[str, Any] | None = None


def engine_messages(system_prompt: str, messages: list[Message]) -> list[dict[str, str]]:
    """The chat the model sees: the system prompt, then user/assistant turns (errors left out)."""
    out = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    out += [
        {"role": m.role, "content": m.content}
        for m in messages
        if m.role in ("user", "assistant", "system")
    ]
    return out


def title_from(text: str, limit: int = 48) -> str:
    """A short title from the first user message (its first line, shortened at a word)."""
    line = " ".join(text.strip().split("\n", 1)[0].split())
    if not line:
        return DEFAULT_TITLE
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0] or line[:limit]
    return cut + "…"


class ChatStore:
    """Create, list, rename and delete conversations; append and edit their messages."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.database_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(self.path), timeout=10, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
            with self._db:
                self._db.executescript(_SCHEMA)
                self._db.execute(
                    "INSERT OR IGNORE INTO chat_meta(key, value) VALUES ('schema', ?)",
                    (str(_SCHEMA_VERSION),),
                )
        except sqlite3.DatabaseError as exc:
            raise ChatStoreError(
                f"Cannot open the conversation database {self.path}: {exc}"
            ) from exc

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None  # type: ignore[assignment]

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                raise ChatStoreError("the conversation store is closed")
            try:
                with self._db:
                    yield self._db
            except sqlite3.DatabaseError as exc:
                raise ChatStoreError(f"Conversation database error: {exc}") from exc

    # ---- conversations ------------------------------------------------------------------
    def create(
        self,
        title: str = DEFAULT_TITLE,
        model_path: str | None = None,
        system_prompt: str = "",
        options: dict[str, Any] | None = None,
    ) -> Conversation:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO chat_conversations(title, created_at, updated_at, model_path,"
                " system_prompt, options) VALUES (?, ?, ?, ?, ?, ?)",
                (title, now, now, model_path, system_prompt, json.dumps(options or {})),
            )
            cid = int(cur.lastrowid or 0)
        return self.get(cid)

    def get(self, conversation_id: int) -> Conversation:
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM chat_conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
        if row is None:
            raise ChatStoreError(f"conversation {conversation_id} does not exist")
        return _conversation(row)

    def conversations(self) -> list[Conversation]:
        """All conversations, the most recently active first."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT * FROM chat_conversations ORDER BY updated_at DESC, id DESC"
            ).fetchall()
        return [_conversation(r) for r in rows]

    def update(self, conversation_id: int, **changes: Any) -> Conversation:
        """Change title, model_path, system_prompt or options (a dict, replaced whole)."""
        allowed = {"title", "model_path", "system_prompt", "options"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
        if "title" in changes:
            changes["title"] = " ".join(str(changes["title"]).split()) or DEFAULT_TITLE
        if "options" in changes:
            changes["options"] = json.dumps(changes["options"] or {})
        if changes:
            cols = ", ".join(f"{k} = ?" for k in changes)
            with self._tx() as db:
                db.execute(
                    f"UPDATE chat_conversations SET {cols} WHERE id = ?",
                    (*changes.values(), conversation_id),
                )
        return self.get(conversation_id)

    def rename(self, conversation_id: int, title: str) -> Conversation:
        return self.update(conversation_id, title=title)

    def delete(self, conversation_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM chat_conversations WHERE id = ?", (conversation_id,))

    # ---- messages -----------------------------------------------------------------------
    def messages(self, conversation_id: int) -> list[Message]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT * FROM chat_messages WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            ).fetchall()
        return [_message(r) for r in rows]

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        stats: dict[str, Any] | None = None,
    ) -> Message:
        """Append a message; the first user message also names an untitled conversation."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO chat_messages(conversation_id, role, content, created_at, stats)"
                " VALUES (?, ?, ?, ?, ?)",
                (conversation_id, role, content, now, _dump(stats)),
            )
            mid = int(cur.lastrowid or 0)
            db.execute(
                "UPDATE chat_conversations SET updated_at = ? WHERE id = ?", (now, conversation_id)
            )
            if role == "user":
                db.execute(
                    "UPDATE chat_conversations SET title = ? WHERE id = ? AND title = ?",
                    (title_from(content), conversation_id, DEFAULT_TITLE),
                )
        return Message(mid, conversation_id, role, content, now, stats)

    def update_message(
        self, message_id: int, content: str, stats: dict[str, Any] | None = None
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE chat_messages SET content = ?, stats = ? WHERE id = ?",
                (content, _dump(stats), message_id),
            )

    def delete_messages_from(self, conversation_id: int, message_id: int) -> int:
        """Delete this message and every later one (regenerate, edit-and-resend); the count."""
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM chat_messages WHERE conversation_id = ? AND id >= ?",
                (conversation_id, message_id),
            )
            return cur.rowcount


def _dump(stats: dict[str, Any] | None) -> str | None:
    return None if stats is None else json.dumps(stats)


def _load(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:  # a damaged value must not hide the rest of the conversation
        return default


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(
        id=row["id"],
        title=row["title"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        model_path=row["model_path"],
        system_prompt=row["system_prompt"],
        options=_load(row["options"], {}),
    )


def _message(row: sqlite3.Row) -> Message:
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        role=row["role"],
        content=row["content"],
        created_at=row["created_at"],
        stats=_load(row["stats"], None),
    )
