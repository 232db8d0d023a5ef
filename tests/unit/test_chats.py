"""ChatStore on a real SQLite file: persistence, ordering, titles, edits, damage, shared file."""

from __future__ import annotations

import sqlite3

import pytest

from app.core import paths
from app.core.chats import (
    DEFAULT_TITLE,
    ChatStore,
    ChatStoreError,
    Message,
    engine_messages,
    title_from,
)


def test_conversations_survive_close_and_reopen():
    store = ChatStore()
    conv = store.create(model_path="/models/a.gguf", system_prompt="Be brief.")
    store.add_message(conv.id, "user", "Hello there")
    reply = store.add_message(conv.id, "assistant", "Hi")
    store.update_message(reply.id, "Hi!", stats={"tokens": 2, "gen_tok_s": 10.0})
    store.close()

    again = ChatStore()
    [c] = again.conversations()
    assert c.title == "Hello there"
    assert c.model_path == "/models/a.gguf"
    assert c.system_prompt == "Be brief."
    msgs = again.messages(c.id)
    assert [(m.role, m.content) for m in msgs] == [("user", "Hello there"), ("assistant", "Hi!")]
    assert msgs[1].stats == {"tokens": 2, "gen_tok_s": 10.0}
    again.close()
    assert paths.database_path().exists()


def test_list_order_rename_delete():
    store = ChatStore()
    a = store.create()
    b = store.create()
    store.add_message(a.id, "user", "later activity")
    assert [c.id for c in store.conversations()] == [a.id, b.id]
    store.rename(b.id, "  My   chat ")
    assert store.get(b.id).title == "My chat"
    store.rename(b.id, "   ")
    assert store.get(b.id).title == DEFAULT_TITLE
    store.delete(a.id)
    assert [c.id for c in store.conversations()] == [b.id]
    assert store.messages(a.id) == []  # messages go with their conversation
    with pytest.raises(ChatStoreError, match="does not exist"):
        store.get(a.id)
    store.close()


def test_renamed_title_is_not_overwritten_by_first_message():
    store = ChatStore()
    c = store.create(title="Kept")
    store.add_message(c.id, "user", "something else")
    assert store.get(c.id).title == "Kept"
    store.close()


def test_delete_messages_from_supports_regenerate_and_edit():
    store = ChatStore()
    c = store.create()
    u1 = store.add_message(c.id, "user", "one")
    store.add_message(c.id, "assistant", "1")
    u2 = store.add_message(c.id, "user", "two")
    store.add_message(c.id, "assistant", "2")
    assert store.delete_messages_from(c.id, u2.id) == 2
    assert [m.content for m in store.messages(c.id)] == ["one", "1"]
    assert store.delete_messages_from(c.id, u1.id) == 2
    assert store.messages(c.id) == []
    store.close()


def test_options_round_trip_and_unknown_fields_rejected():
    store = ChatStore()
    c = store.create(options={"n_ctx": 2048})
    store.update(c.id, options={"n_ctx": 1024, "preset": "precise"})
    assert store.get(c.id).options == {"n_ctx": 1024, "preset": "precise"}
    with pytest.raises(ValueError, match="id"):
        store.update(c.id, id=5)
    with pytest.raises(ValueError, match="role"):
        store.add_message(c.id, "wizard", "x")
    store.close()


def test_other_tables_in_the_same_file_are_left_alone():
    db = sqlite3.connect(paths.database_path())
    db.execute("CREATE TABLE library_models (path TEXT)")
    db.execute("INSERT INTO library_models VALUES ('x.gguf')")
    db.commit()
    db.close()
    store = ChatStore()
    store.create()
    store.close()
    db = sqlite3.connect(paths.database_path())
    assert db.execute("SELECT path FROM library_models").fetchall() == [("x.gguf",)]
    db.close()


def test_damaged_database_gives_a_clear_error():
    paths.database_path().write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ChatStoreError, match="Cannot open the conversation database"):
        ChatStore()


def test_closed_store_refuses_work():
    store = ChatStore()
    store.close()
    store.close()
    with pytest.raises(ChatStoreError, match="closed"):
        store.conversations()


def test_engine_messages_leave_errors_out():
    msgs = [
        Message(1, 1, "user", "hi", 0),
        Message(2, 1, "error", "engine died", 0),
        Message(3, 1, "assistant", "hello", 0),
    ]
    assert engine_messages("sys", msgs) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    assert engine_messages("  ", msgs)[0]["role"] == "user"


def test_title_from():
    assert title_from("  hello\nworld") == "hello"
    assert title_from("") == DEFAULT_TITLE
    long = title_from("word " * 40)
    assert long.endswith("…") and len(long) <= 49
