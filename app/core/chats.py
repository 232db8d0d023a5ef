"""Conversations and their messages, kept in the app's one SQLite file.

:class:`ChatStore` owns the tables ``chat_conversations``, ``chat_messages``, ``chat_meta`` and
``chat_prompt_presets`` (other parts of QuantDesk keep their own tables in the same file).  Roles are
``system``, ``user``, ``assistant`` and ``error``: an error message records an engine failure in the
conversation for the user to see and is never sent back to the model (see :func:`engine_messages`).

Messages form a tree, as in GPT4All and text-generation-webui: each message has a parent (``None``
for the first one), a regenerated reply is a sibling of the reply it replaces and an edited user
message a sibling of the original, so nothing is ever overwritten.  The conversation shows one
*active path* from a root to its ``leaf_id``; :meth:`ChatStore.select` switches to another branch.
A reply's ``<think>`` part is kept apart in ``reasoning`` and never sent back to the model
(:mod:`app.core.chat_format` splits it).

The schema is versioned (``chat_meta``'s ``schema`` key) and older files are migrated in place
inside one transaction when opened: nothing is lost, and a file from a newer QuantDesk is refused
with a clear message instead of being damaged.

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
from app.core.chat_format import CLOSE as THINK_CLOSE
from app.core.chat_format import OPEN as THINK_OPEN
from app.core.chat_format import split_reasoning as _split_reasoning
from app.core.errors import ErrorKind, QuantDeskError

ROLES = ("system", "user", "assistant", "error")
DEFAULT_TITLE = "New chat"
_SCHEMA_VERSION = 2
EXPORT_FORMAT = "quantdesk-chat"
EXPORT_VERSION = 1
MAX_IMPORT_BYTES = 64 * 1000 * 1000  # a chat export is text; anything bigger is not one

# Version 1, as the first release wrote it; later versions are reached by _MIGRATIONS.
_BASE_SCHEMA = """
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

_TO_V2 = [
    # the tree: a parent per message (a message is always newer than its parent, so ids order a
    # path), when each was last on the active path (which branch to show below a switch), and the
    # reply's reasoning kept apart from its answer
    "ALTER TABLE chat_messages ADD COLUMN parent_id INTEGER"
    " REFERENCES chat_messages(id) ON DELETE CASCADE",
    "ALTER TABLE chat_messages ADD COLUMN chosen_at REAL NOT NULL DEFAULT 0",
    "ALTER TABLE chat_messages ADD COLUMN reasoning TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE chat_conversations ADD COLUMN leaf_id INTEGER",
    "CREATE INDEX IF NOT EXISTS chat_messages_by_parent ON chat_messages(parent_id)",
    "CREATE TABLE IF NOT EXISTS chat_prompt_presets ("
    " name TEXT PRIMARY KEY, text TEXT NOT NULL, created_at REAL NOT NULL)",
    # version 1 conversations were a line: each message's parent is the one before it
    "UPDATE chat_messages SET parent_id = (SELECT MAX(p.id) FROM chat_messages p"
    " WHERE p.conversation_id = chat_messages.conversation_id AND p.id < chat_messages.id),"
    " chosen_at = created_at",
    "UPDATE chat_conversations SET leaf_id ="
    " (SELECT MAX(m.id) FROM chat_messages m WHERE m.conversation_id = chat_conversations.id)",
]
_MIGRATIONS: dict[int, list[str]] = {2: _TO_V2}

_PATH_SQL = """
WITH RECURSIVE path(id) AS (
    SELECT ? UNION ALL
    SELECT m.parent_id FROM chat_messages m JOIN path ON m.id = path.id
    WHERE m.parent_id IS NOT NULL
)
SELECT chat_messages.* FROM chat_messages JOIN path ON chat_messages.id = path.id
WHERE chat_messages.conversation_id = ? ORDER BY chat_messages.id
"""
_SUBTREE_SQL = """
WITH RECURSIVE sub(id) AS (
    SELECT ? UNION ALL
    SELECT m.id FROM chat_messages m JOIN sub ON m.parent_id = sub.id
)
SELECT id FROM sub
"""

# A few system prompts everyone needs; the user saves their own next to them.
BUILTIN_PROMPTS: dict[str, str] = {
    "Helpful assistant": "You are a helpful assistant. Answer clearly and accurately.",
    "Concise": "You are a concise assistant. Answer in as few words as the question allows.",
    "Programmer": (
        "You are an expert programmer. Give correct, idiomatic code with a short explanation; "
        "say which language and version you assume."
    ),
    "Translator": (
        "You are a translator. Translate the user's text into English (or into the language they "
        "ask for), keeping its meaning and tone; reply with the translation only."
    ),
    "Teacher": (
        "You are a patient teacher. Explain step by step, check understanding with a short "
        "question at the end, and avoid jargon unless you define it."
    ),
}


class ChatStoreError(QuantDeskError):
    """A stored conversation could not be read or written (the message says why)."""

    default_kind = ErrorKind.STORAGE


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
    leaf_id: int | None = None


@dataclass
class Message:
    """One message; ``stats`` holds a reply's GenerationStats as a dict (or None).

    ``parent_id`` is the message it answers or follows (None for a first message) and
    ``reasoning`` a reply's thinking part (shown apart, never sent back to the model).
    """

    id: int
    conversation_id: int
    role: str
    content: str
    created_at: float
    stats: dict[str, Any] | None = None
    parent_id: int | None = None
    reasoning: str = ""


@dataclass(frozen=True)
class PromptPreset:
    """A named system prompt; built-in ones cannot be changed or deleted."""

    name: str
    text: str
    builtin: bool


# ---- reasoning (<think>) ------------------------------------------------------------------------
# The one splitter is app.core.chat_format's (the engine counts reasoning tokens with it too).


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, answer) of a finished reply, as stored or imported.

    A reply whose template opened the block in the prompt (Qwen3, DeepSeek-R1 distills) holds only
    the closing tag: everything before ``</think>`` is then reasoning.
    """
    opened = THINK_CLOSE in text and THINK_OPEN not in text.split(THINK_CLOSE, 1)[0]
    reasoning, answer = _split_reasoning(text, in_reasoning=opened)
    return reasoning.strip(), answer if answer.strip() else ""


def engine_messages(system_prompt: str, messages: list[Message]) -> list[dict[str, str]]:
    """The chat the model sees: the system prompt, then user/assistant turns (errors left out).

    Replies go back without their reasoning: the chat templates of reasoning models (DeepSeek-R1,
    Qwen3) drop earlier turns' thinking themselves, and sending it would fill the context.
    """
    out = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    for m in messages:
        if m.role == "assistant":
            out.append({"role": "assistant", "content": split_reasoning(m.content)[1]})
        elif m.role in ("user", "system"):
            out.append({"role": m.role, "content": m.content})
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


_LEAF = -1  # add_message's default parent: the end of the active path


class ChatStore:
    """Create, list, rename and delete conversations; add, branch and switch their messages."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.database_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # Autocommit mode: every change runs in an explicit transaction (see _tx), DDL included,
        # so a migration is all or nothing.
        self._db: sqlite3.Connection | None = None
        try:
            db = self._db = sqlite3.connect(
                str(self.path), timeout=10, check_same_thread=False, isolation_level=None
            )
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA journal_mode = WAL")
            self._migrate(db)
        except (sqlite3.DatabaseError, ChatStoreError) as exc:
            self.close()
            if isinstance(exc, ChatStoreError):
                raise
            raise ChatStoreError(
                f"Cannot open the conversation database {self.path}: {exc}"
            ) from exc

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Bring the file to this version in one transaction (a failure leaves it as it was)."""
        db.execute("BEGIN IMMEDIATE")  # two windows opening at once migrate only once
        try:
            for statement in _BASE_SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT OR IGNORE INTO chat_meta(key, value) VALUES ('schema', '1')")
            row = db.execute("SELECT value FROM chat_meta WHERE key = 'schema'").fetchone()
            version = int(row["value"])
            if version > _SCHEMA_VERSION:
                raise ChatStoreError(
                    f"The conversation database {self.path} was written by a newer QuantDesk "
                    f"(schema {version}; this one reads up to {_SCHEMA_VERSION}). Update "
                    "QuantDesk; the file was left as it is."
                )
            for target in range(version + 1, _SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    db.execute(statement)
            if version < _SCHEMA_VERSION:
                db.execute(
                    "UPDATE chat_meta SET value = ? WHERE key = 'schema'", (str(_SCHEMA_VERSION),)
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            if db is None:
                raise ChatStoreError("the conversation store is closed")
            try:
                db.execute("BEGIN")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                raise ChatStoreError(f"Conversation database error: {exc}") from exc

    @property
    def schema_version(self) -> int:
        with self._tx() as db:
            row = db.execute("SELECT value FROM chat_meta WHERE key = 'schema'").fetchone()
        return int(row["value"])

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
        """The active path: the messages the conversation shows, oldest first."""
        with self._tx() as db:
            return self._path(db, conversation_id)

    def all_messages(self, conversation_id: int) -> list[Message]:
        """Every message of every branch, oldest first."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT * FROM chat_messages WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            ).fetchall()
        return [_message(r) for r in rows]

    def message(self, message_id: int) -> Message:
        with self._tx() as db:
            row = db.execute("SELECT * FROM chat_messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise ChatStoreError(f"message {message_id} does not exist")
        return _message(row)

    def alternatives(self, conversation_id: int) -> dict[int | None, list[int]]:
        """Parent id -> the ids of its children, oldest first (the ``< 2/3 >`` of each message)."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, parent_id FROM chat_messages WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            ).fetchall()
        out: dict[int | None, list[int]] = {}
        for row in rows:
            out.setdefault(row["parent_id"], []).append(int(row["id"]))
        return out

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        stats: dict[str, Any] | None = None,
        *,
        parent_id: int | None = _LEAF,
        reasoning: str = "",
    ) -> Message:
        """Add a message below ``parent_id`` (by default the end of the active path) and make
        it the end of the active path; the first user message also names an untitled chat.

        A parent that already has children gets one more: that is how a regenerated reply or an
        edited message becomes an alternative instead of replacing what was there.
        """
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        now = time.time()
        with self._tx() as db:
            if parent_id == _LEAF:
                parent_id = self._leaf(db, conversation_id)
            elif parent_id is not None:
                self._check_in(db, conversation_id, parent_id)
            cur = db.execute(
                "INSERT INTO chat_messages(conversation_id, role, content, created_at, stats,"
                " parent_id, chosen_at, reasoning) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, role, content, now, _dump(stats), parent_id, now, reasoning),
            )
            mid = int(cur.lastrowid or 0)
            self._activate(db, conversation_id, mid, now)
            if role == "user":
                db.execute(
                    "UPDATE chat_conversations SET title = ? WHERE id = ? AND title = ?",
                    (title_from(content), conversation_id, DEFAULT_TITLE),
                )
        return Message(mid, conversation_id, role, content, now, stats, parent_id, reasoning)

    def update_message(
        self,
        message_id: int,
        content: str,
        stats: dict[str, Any] | None = None,
        reasoning: str | None = None,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE chat_messages SET content = ?, stats = ? WHERE id = ?",
                (content, _dump(stats), message_id),
            )
            if reasoning is not None:
                db.execute(
                    "UPDATE chat_messages SET reasoning = ? WHERE id = ?", (reasoning, message_id)
                )

    def select(self, conversation_id: int, message_id: int) -> list[Message]:
        """Show the branch through ``message_id``: below it, the branch last shown there.

        Returns the new active path.
        """
        with self._tx() as db:
            self._check_in(db, conversation_id, message_id)
            leaf = message_id
            while True:
                row = db.execute(
                    "SELECT id FROM chat_messages WHERE parent_id = ?"
                    " ORDER BY chosen_at DESC, id DESC LIMIT 1",
                    (leaf,),
                ).fetchone()
                if row is None:
                    break
                leaf = int(row["id"])
            self._activate(db, conversation_id, leaf, time.time())
            return self._path(db, conversation_id)

    def delete_messages_from(self, conversation_id: int, message_id: int) -> int:
        """Delete this message and every message below it (its branch); the count deleted.

        The active path then ends at the deleted message's parent.
        """
        with self._tx() as db:
            msg = self._check_in(db, conversation_id, message_id, missing_ok=True)
            if msg is None:
                return 0
            count = len(db.execute(_SUBTREE_SQL, (message_id,)).fetchall())
            db.execute("DELETE FROM chat_messages WHERE id = ?", (message_id,))  # cascades
            parent = msg["parent_id"]
            if parent is None:  # a first message: another first message's branch, if any
                row = db.execute(
                    "SELECT id FROM chat_messages WHERE conversation_id = ? AND parent_id IS NULL"
                    " ORDER BY chosen_at DESC, id DESC LIMIT 1",
                    (conversation_id,),
                ).fetchone()
                parent = int(row["id"]) if row is not None else None
            db.execute(
                "UPDATE chat_conversations SET leaf_id = ? WHERE id = ?", (parent, conversation_id)
            )
            return count

    # ---- export and import ----------------------------------------------------------------
    def export_json(self, conversation_id: int) -> dict[str, Any]:
        """The whole conversation, every branch included, as :meth:`import_json` reads it."""
        conv = self.get(conversation_id)
        return {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "title": conv.title,
            "created_at": conv.created_at,
            "updated_at": conv.updated_at,
            "model_path": conv.model_path,
            "system_prompt": conv.system_prompt,
            "options": conv.options,
            "active_id": self._leaf_of(conversation_id),
            "messages": [
                {
                    "id": m.id,
                    "parent_id": m.parent_id,
                    "role": m.role,
                    "content": m.content,
                    "reasoning": m.reasoning,
                    "created_at": m.created_at,
                    "stats": m.stats,
                }
                for m in self.all_messages(conversation_id)
            ],
        }

    def export_markdown(self, conversation_id: int) -> str:
        """The shown branch as Markdown: a heading per message, reasoning as a quote."""
        conv = self.get(conversation_id)
        names = {"user": "You", "assistant": "Assistant", "error": "Error", "system": "System"}
        lines = [f"# {conv.title}", ""]
        if conv.model_path:
            lines += [f"Model: `{Path(conv.model_path).name}`", ""]
        if conv.system_prompt.strip():
            lines += ["## System prompt", "", conv.system_prompt.strip(), ""]
        for m in self.messages(conversation_id):
            lines += [f"## {names.get(m.role, m.role)}", ""]
            if m.reasoning.strip():
                lines += ["> **Thinking**", ">"]
                lines += [f"> {ln}".rstrip() for ln in m.reasoning.strip().splitlines()]
                lines.append("")
            lines += [m.content.rstrip(), ""]
        return "\n".join(lines).rstrip() + "\n"

    def import_json(self, data: Any) -> Conversation:
        """A new conversation from :meth:`export_json`'s format (or a plain list of
        ``{"role", "content"}`` messages); bad input raises :class:`ChatStoreError` and stores
        nothing."""
        header, messages = _check_import(data)
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO chat_conversations(title, created_at, updated_at, model_path,"
                " system_prompt, options) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    header["title"],
                    header["created_at"] or now,
                    header["updated_at"] or now,
                    header["model_path"],
                    header["system_prompt"],
                    json.dumps(header["options"]),
                ),
            )
            cid = int(cur.lastrowid or 0)
            new_ids: dict[Any, int] = {}
            for m in messages:  # parents come first (checked)
                cur = db.execute(
                    "INSERT INTO chat_messages(conversation_id, role, content, created_at, stats,"
                    " parent_id, chosen_at, reasoning) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        cid,
                        m["role"],
                        m["content"],
                        m["created_at"] or now,
                        _dump(m["stats"]),
                        None if m["parent_id"] is None else new_ids[m["parent_id"]],
                        m["created_at"] or now,
                        m["reasoning"],
                    ),
                )
                new_ids[m["id"]] = int(cur.lastrowid or 0)
            active = header["active_id"]
            leaf = new_ids.get(active) if active is not None else None
            if leaf is None and new_ids:
                leaf = list(new_ids.values())[-1]
            if leaf is not None:
                self._activate(db, cid, leaf, now, touch=False)
        return self.get(cid)

    # ---- system prompt presets ------------------------------------------------------------
    def prompt_presets(self) -> list[PromptPreset]:
        """Built-in presets first, then the user's own by name."""
        with self._tx() as db:
            rows = db.execute("SELECT name, text FROM chat_prompt_presets ORDER BY name").fetchall()
        return [PromptPreset(n, t, True) for n, t in BUILTIN_PROMPTS.items()] + [
            PromptPreset(r["name"], r["text"], False) for r in rows
        ]

    def save_prompt_preset(self, name: str, text: str) -> PromptPreset:
        """Save (or replace) a user preset; built-in names are taken."""
        name = " ".join(name.split())
        if not name:
            raise ChatStoreError("A preset needs a name.", ErrorKind.REQUEST)
        if name in BUILTIN_PROMPTS:
            raise ChatStoreError(
                f"“{name}” is a built-in preset; choose another name.", ErrorKind.REQUEST
            )
        with self._tx() as db:
            db.execute(
                "INSERT INTO chat_prompt_presets(name, text, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET text = excluded.text",
                (name, text, time.time()),
            )
        return PromptPreset(name, text, False)

    def delete_prompt_preset(self, name: str) -> None:
        if name in BUILTIN_PROMPTS:
            raise ChatStoreError(
                f"“{name}” is a built-in preset and cannot be deleted.", ErrorKind.REQUEST
            )
        with self._tx() as db:
            db.execute("DELETE FROM chat_prompt_presets WHERE name = ?", (name,))

    # ---- internals ----------------------------------------------------------------------
    def _leaf_of(self, conversation_id: int) -> int | None:
        with self._tx() as db:
            return self._leaf(db, conversation_id)

    def _leaf(self, db: sqlite3.Connection, conversation_id: int) -> int | None:
        row = db.execute(
            "SELECT leaf_id FROM chat_conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        if row is None:  # a deleted conversation has no messages
            return None
        leaf = row["leaf_id"]
        if leaf is not None and self._check_in(db, conversation_id, leaf, missing_ok=True):
            return int(leaf)
        # no leaf recorded (or it went away): the newest message, as version 1 showed it
        row = db.execute(
            "SELECT MAX(id) AS id FROM chat_messages WHERE conversation_id = ?", (conversation_id,)
        ).fetchone()
        return None if row["id"] is None else int(row["id"])

    def _path(self, db: sqlite3.Connection, conversation_id: int) -> list[Message]:
        leaf = self._leaf(db, conversation_id)
        if leaf is None:
            return []
        rows = db.execute(_PATH_SQL, (leaf, conversation_id)).fetchall()
        return [_message(r) for r in rows]

    def _check_in(
        self,
        db: sqlite3.Connection,
        conversation_id: int,
        message_id: int,
        missing_ok: bool = False,
    ) -> sqlite3.Row | None:
        row = db.execute(
            "SELECT id, parent_id FROM chat_messages WHERE id = ? AND conversation_id = ?",
            (message_id, conversation_id),
        ).fetchone()
        if row is None and not missing_ok:
            raise ChatStoreError(f"message {message_id} is not in conversation {conversation_id}")
        return row

    def _activate(
        self,
        db: sqlite3.Connection,
        conversation_id: int,
        leaf: int,
        now: float,
        touch: bool = True,
    ) -> None:
        # Every message on the new path is marked: below any message, the branch shown last is
        # the one with the newest mark (see select).
        db.execute(
            "UPDATE chat_messages SET chosen_at = ? WHERE id IN ("
            "WITH RECURSIVE path(id) AS (SELECT ? UNION ALL SELECT m.parent_id FROM"
            " chat_messages m JOIN path ON m.id = path.id WHERE m.parent_id IS NOT NULL)"
            " SELECT id FROM path)",
            (now, leaf),
        )
        if touch:
            db.execute(
                "UPDATE chat_conversations SET leaf_id = ?, updated_at = ? WHERE id = ?",
                (leaf, now, conversation_id),
            )
        else:
            db.execute(
                "UPDATE chat_conversations SET leaf_id = ? WHERE id = ?", (leaf, conversation_id)
            )


def read_export(path: Path) -> Any:
    """The JSON in an exported chat file (size-limited; a clear error when it is not JSON)."""
    try:
        size = path.stat().st_size
        if size > MAX_IMPORT_BYTES:
            raise ChatStoreError(
                f"{path.name} is {size // 1_000_000} MB: too big to be a chat export.",
                ErrorKind.REQUEST,
            )
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ChatStoreError(
            f"Cannot read {path.name}: {exc.strerror or exc}", ErrorKind.DISK
        ) from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise ChatStoreError(
            f"{path.name} is not a JSON chat export: {exc}", ErrorKind.REQUEST
        ) from exc


def _check_import(data: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and messages of an export, checked; ChatStoreError says what is wrong."""

    def bad(why: str) -> ChatStoreError:
        return ChatStoreError(f"Not a chat this version can import: {why}.", ErrorKind.REQUEST)

    if isinstance(data, list):  # a plain message list, as many tools write it
        data = {"messages": data}
    if not isinstance(data, dict):
        raise bad("expected a JSON object or a list of messages")
    if "format" in data and data["format"] != EXPORT_FORMAT:
        raise bad(f"its format is {str(data['format'])[:40]!r}")
    version = data.get("version", EXPORT_VERSION)
    if not isinstance(version, int) or version > EXPORT_VERSION:
        raise bad(f"export version {version!r} is newer than this QuantDesk")
    raw = data.get("messages")
    if not isinstance(raw, list):
        raise bad("it has no list of messages")
    linear = not any(isinstance(m, dict) and "id" in m for m in raw)
    seen: set[Any] = set()
    messages: list[dict[str, Any]] = []
    previous: Any = None
    for n, m in enumerate(raw, start=1):
        if not isinstance(m, dict):
            raise bad(f"message {n} is not an object")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise bad(f"message {n} has the role {str(role)[:20]!r}")
        if not isinstance(content, str):
            raise bad(f"message {n} has no text")
        mid = n if linear else m.get("id")
        parent = previous if linear else m.get("parent_id")
        if not isinstance(mid, (int, str)) or isinstance(mid, bool) or mid in seen:
            raise bad(f"message {n} has a missing or repeated id")
        if parent is not None and parent not in seen:
            raise bad(f"message {n} follows a message that does not come before it")
        stats = m.get("stats")
        reasoning = m.get("reasoning", "")
        messages.append(
            {
                "id": mid,
                "parent_id": parent,
                "role": role,
                "content": content,
                "reasoning": reasoning if isinstance(reasoning, str) else "",
                "created_at": _number(m.get("created_at")),
                "stats": stats if isinstance(stats, dict) else None,
            }
        )
        seen.add(mid)
        previous = mid
    options = data.get("options")
    title = data.get("title")
    header = {
        "title": " ".join(title.split())[:200] if isinstance(title, str) and title.strip() else "",
        "created_at": _number(data.get("created_at")),
        "updated_at": _number(data.get("updated_at")),
        "model_path": data["model_path"] if isinstance(data.get("model_path"), str) else None,
        "system_prompt": data["system_prompt"]
        if isinstance(data.get("system_prompt"), str)
        else "",
        "options": options if isinstance(options, dict) else {},
        "active_id": data.get("active_id") if data.get("active_id") in seen else None,
    }
    if not header["title"]:
        first = next((m["content"] for m in messages if m["role"] == "user"), "")
        header["title"] = title_from(first)
    return header, messages


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


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
        leaf_id=row["leaf_id"],
    )


def _message(row: sqlite3.Row) -> Message:
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        role=row["role"],
        content=row["content"],
        created_at=row["created_at"],
        stats=_load(row["stats"], None),
        parent_id=row["parent_id"],
        reasoning=row["reasoning"] or "",
    )
