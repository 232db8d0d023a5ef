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


# ---- the message tree: alternatives, branches, migration, export ------------------------------


def _contents(messages):
    return [m.content for m in messages]


def test_alternatives_and_branches_survive_a_restart():
    store = ChatStore()
    c = store.create()
    u1 = store.add_message(c.id, "user", "first question")
    a1 = store.add_message(c.id, "assistant", "answer one")
    a2 = store.add_message(c.id, "assistant", "answer two", parent_id=u1.id)  # regenerated
    u2 = store.add_message(c.id, "user", "follow-up")  # below the shown reply: a2
    store.add_message(c.id, "assistant", "reply to follow-up")
    edited = store.add_message(c.id, "user", "first question, edited", parent_id=None)
    store.add_message(c.id, "assistant", "answer to the edit", reasoning="let me think")
    store.close()

    again = ChatStore()
    assert _contents(again.messages(c.id)) == ["first question, edited", "answer to the edit"]
    assert again.messages(c.id)[1].reasoning == "let me think"
    alts = again.alternatives(c.id)
    assert alts[None] == [u1.id, edited.id]
    assert alts[u1.id] == [a1.id, a2.id]
    # back to the first question: below it, the branch shown there last (a2 and its follow-up)
    assert _contents(again.select(c.id, u1.id)) == [
        "first question",
        "answer two",
        "follow-up",
        "reply to follow-up",
    ]
    assert _contents(again.select(c.id, a1.id)) == ["first question", "answer one"]
    again.close()
    third = ChatStore()
    assert _contents(third.messages(c.id)) == ["first question", "answer one"]  # kept
    assert _contents(third.select(c.id, u2.id))[-2:] == ["follow-up", "reply to follow-up"]
    with pytest.raises(ChatStoreError, match="not in conversation"):
        third.select(third.create().id, u2.id)
    third.close()


def test_deleting_a_branch_keeps_its_siblings():
    store = ChatStore()
    c = store.create()
    u = store.add_message(c.id, "user", "q")
    a1 = store.add_message(c.id, "assistant", "a1")
    store.add_message(c.id, "user", "more")
    a2 = store.add_message(c.id, "assistant", "a2", parent_id=u.id)
    store.select(c.id, a1.id)
    assert store.delete_messages_from(c.id, a1.id) == 2
    assert _contents(store.messages(c.id)) == ["q"]
    assert store.alternatives(c.id)[u.id] == [a2.id]
    store.close()


_V1_SCHEMA = """
CREATE TABLE chat_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE chat_conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, model_path TEXT, system_prompt TEXT NOT NULL DEFAULT '',
    options TEXT NOT NULL DEFAULT '{}');
CREATE TABLE chat_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES chat_conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL, content TEXT NOT NULL, created_at REAL NOT NULL, stats TEXT);
INSERT INTO chat_meta VALUES ('schema', '1');
INSERT INTO chat_conversations VALUES (1, 'Old chat', 1, 2, '/m/a.gguf', 'Be kind.', '{"top_k": 5}');
INSERT INTO chat_conversations VALUES (2, 'Other', 1, 3, NULL, '', '{}');
INSERT INTO chat_messages VALUES (1, 1, 'user', 'hello', 1, NULL);
INSERT INTO chat_messages VALUES (2, 2, 'user', 'elsewhere', 1, NULL);
INSERT INTO chat_messages VALUES (3, 1, 'assistant', 'hi!', 1, '{"tokens": 2}');
INSERT INTO chat_messages VALUES (4, 1, 'error', 'engine died', 1, NULL);
INSERT INTO chat_messages VALUES (5, 1, 'user', 'again', 1, NULL);
"""


def test_a_version_1_database_is_migrated_without_losing_anything():
    db = sqlite3.connect(paths.database_path())
    db.executescript(_V1_SCHEMA)
    db.close()
    store = ChatStore()
    assert store.schema_version == 2
    conv = store.get(1)
    assert (conv.title, conv.system_prompt, conv.options) == ("Old chat", "Be kind.", {"top_k": 5})
    msgs = store.messages(1)
    assert [(m.role, m.content) for m in msgs] == [
        ("user", "hello"),
        ("assistant", "hi!"),
        ("error", "engine died"),
        ("user", "again"),
    ]
    assert [m.parent_id for m in msgs] == [None, 1, 3, 4]  # a line, as version 1 showed it
    assert msgs[1].stats == {"tokens": 2}
    assert _contents(store.messages(2)) == ["elsewhere"]
    # and it works as a tree from now on
    store.add_message(1, "assistant", "hi again", parent_id=1)
    assert _contents(store.messages(1)) == ["hello", "hi again"]
    store.close()
    assert ChatStore().schema_version == 2  # opening again migrates nothing twice


def test_a_database_from_a_newer_version_is_refused_and_left_alone():
    store = ChatStore()
    store.create(title="Mine")
    store.close()
    db = sqlite3.connect(paths.database_path())
    db.execute("UPDATE chat_meta SET value = '99' WHERE key = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(ChatStoreError, match="newer QuantDesk"):
        ChatStore()
    db = sqlite3.connect(paths.database_path())
    assert db.execute("SELECT title FROM chat_conversations").fetchall() == [("Mine",)]
    db.close()


def test_export_and_import_round_trip_keeps_every_branch(tmp_path):
    from app.core.chats import read_export

    store = ChatStore()
    c = store.create(model_path="/m/model.gguf", system_prompt="Be brief.", options={"top_k": 3})
    u = store.add_message(c.id, "user", "What is 2+2?")
    store.add_message(c.id, "assistant", "5", stats={"tokens": 1})
    store.add_message(c.id, "assistant", "4", parent_id=u.id, reasoning="2 and 2 make 4")
    store.rename(c.id, "Sums")
    path = tmp_path / "sums.json"
    import json

    path.write_text(json.dumps(store.export_json(c.id)), encoding="utf-8")
    store.close()

    again = ChatStore()
    copy = again.import_json(read_export(path))
    assert copy.id != c.id
    assert (copy.title, copy.system_prompt, copy.options) == ("Sums", "Be brief.", {"top_k": 3})
    shown = again.messages(copy.id)
    assert [(m.role, m.content, m.reasoning) for m in shown] == [
        ("user", "What is 2+2?", ""),
        ("assistant", "4", "2 and 2 make 4"),
    ]
    alts = again.alternatives(copy.id)
    assert [again.message(i).content for i in alts[shown[0].id]] == ["5", "4"]
    assert again.message(alts[shown[0].id][0]).stats == {"tokens": 1}
    md = again.export_markdown(copy.id)
    assert md.startswith("# Sums\n")
    assert "## You\n\nWhat is 2+2?" in md and "## Assistant" in md
    assert "> 2 and 2 make 4" in md and "\n4\n" in md and "\n5\n" not in md  # the shown branch
    again.close()


def test_import_takes_a_plain_message_list_and_refuses_bad_input(tmp_path):
    from app.core.chats import read_export

    store = ChatStore()
    conv = store.import_json(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    )
    assert conv.title == "hi"
    assert [(m.role, m.content) for m in store.messages(conv.id)] == [
        ("user", "hi"),
        ("assistant", "hello"),
    ]
    before = len(store.conversations())
    for bad, why in (
        ({"format": "other-app"}, "format"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "role"),
        ({"messages": [{"id": 1, "parent_id": 7, "role": "user", "content": "x"}]}, "before"),
        ({"messages": [{"role": "user"}]}, "no text"),
        ("just text", "JSON object"),
        ({"version": 9, "messages": []}, "newer"),
    ):
        with pytest.raises(ChatStoreError, match=why):
            store.import_json(bad)
    assert len(store.conversations()) == before  # nothing half-imported
    junk = tmp_path / "junk.json"
    junk.write_bytes(b"\xff\xfe not json")
    with pytest.raises(ChatStoreError, match="not a JSON chat export"):
        read_export(junk)
    store.close()


def test_system_prompt_presets_builtin_and_saved():
    store = ChatStore()
    builtin = [p.name for p in store.prompt_presets() if p.builtin]
    assert "Helpful assistant" in builtin and len(builtin) >= 3
    store.save_prompt_preset("  Pirate  ", "Talk like a pirate.")
    store.save_prompt_preset("Pirate", "Talk like a pirate, briefly.")
    store.close()
    again = ChatStore()
    mine = [(p.name, p.text) for p in again.prompt_presets() if not p.builtin]
    assert mine == [("Pirate", "Talk like a pirate, briefly.")]
    with pytest.raises(ChatStoreError, match="built-in"):
        again.save_prompt_preset("Helpful assistant", "x")
    with pytest.raises(ChatStoreError, match="built-in"):
        again.delete_prompt_preset("Helpful assistant")
    with pytest.raises(ChatStoreError, match="name"):
        again.save_prompt_preset("  ", "x")
    again.delete_prompt_preset("Pirate")
    assert all(p.builtin for p in again.prompt_presets())
    again.close()


# ---- reasoning -----------------------------------------------------------------------------------


def test_split_reasoning():
    from app.core.chats import split_reasoning

    assert split_reasoning("<think>\nhmm\n</think>\n\nAnswer.") == ("hmm", "Answer.")
    assert split_reasoning("  <think>still going") == ("still going", "")
    assert split_reasoning("hmm</think>Answer") == ("hmm", "Answer")  # template opened it
    assert split_reasoning("Plain answer.") == ("", "Plain answer.")
    assert split_reasoning("<think>\n\n</think>\n\nHi") == ("", "Hi")  # Qwen3, thinking off


def test_engine_messages_leave_reasoning_out():
    msgs = [
        Message(1, 1, "user", "hi", 0),
        Message(2, 1, "assistant", "hello", 0, reasoning="greet back"),
        Message(3, 1, "assistant", "<think>old style</think>Answer", 0),
    ]
    assert [m["content"] for m in engine_messages("", msgs)] == ["hi", "hello", "Answer"]
