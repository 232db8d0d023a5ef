"""Task files: parsing with line-numbered errors, scoring, degradation and verdicts."""

from __future__ import annotations

import pytest

from app.core.taskeval import (
    FINE,
    INVESTIGATE,
    REFERENCE,
    build_task_report,
    degradation_pct,
    parse_prompts,
    read_prompts,
    score_reply,
)


def test_malformed_lines_are_reported_by_number_and_the_rest_is_kept():
    text = "\n".join(
        [
            '{"prompt": "capital of France?", "expected": "Paris"}',
            "",
            '{"prompt": "unterminated',
            '["a list"]',
            '{"expected": "no prompt"}',
            '{"prompt": "", "expected": "x"}',
            '{"prompt": "ok", "expected": {"nested": 1}}',
            '{"prompt": "say hi"}',
            '{"prompt": "count", "expected": 3}',
        ]
    )
    items, errors = parse_prompts(text)
    assert [i.line for i in items] == [1, 8, 9]
    assert items[0].expected == "Paris" and items[1].expected is None and items[2].expected == "3"
    assert [e.line for e in errors] == [3, 4, 5, 6, 7]
    assert "not valid JSON" in errors[0].error and "prompt" in errors[2].error


def test_unreadable_file_gives_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        read_prompts(tmp_path / "missing.jsonl")
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(ValueError, match="UTF-8"):
        read_prompts(bad)


def test_expected_answer_matches_whole_words_ignoring_case_and_punctuation():
    assert score_reply("The answer is: PARIS.", "Paris", None) == 1.0
    assert score_reply("Comparison", "Paris", None) == 0.0
    assert score_reply("It is 42!", "42", "anything") == 1.0


def test_without_expected_the_score_is_similarity_to_the_reference_reply():
    assert score_reply("a b c d", None, "a b c d") == 1.0
    assert score_reply("a b x d", None, "a b c d") == pytest.approx(0.75)
    assert score_reply("", None, "") == 1.0


def test_degradation_and_verdicts():
    assert degradation_pct(0.5, 1.0) == pytest.approx(50.0)
    assert degradation_pct(1.0, 0.8) == pytest.approx(-25.0)
    assert degradation_pct(0.0, 0.0) == 0.0
    items, _ = parse_prompts(
        '{"prompt": "p1", "expected": "yes"}\n{"prompt": "p2", "expected": "blue"}\n{"prompt": "p3"}'
    )
    replies = [
        ["yes indeed", "it is blue", "one two three four"],  # reference: 1, 1, 1
        ["yes", "blue", "one two three four"],  # 1, 1, 1 -> 0 %
        ["yes", "red", "one two three five"],  # 1, 0, 0.75 -> 41.7 %
        ["no", None, None],  # only p1 answered: 0 vs 1 -> 100 %
    ]
    names = [(f"m{i}", q) for i, q in enumerate(["F16", "Q8_0", "Q2_K", "Q4_0"])]
    report = build_task_report(items, replies, 0, names, 5.0, [], False)
    v = report.variants
    assert v[0].verdict == REFERENCE and v[0].score == 1.0
    assert v[1].degradation_pct == pytest.approx(0.0) and v[1].verdict == FINE
    assert v[2].score == pytest.approx(1.75 / 3) and v[2].verdict == INVESTIGATE
    assert v[2].degradation_pct == pytest.approx(100 * (1 - 1.75 / 3))
    assert v[3].answered == 1 and v[3].degradation_pct == 100.0
    lenient = build_task_report(items, replies, 0, names, 50.0, [], False)
    assert lenient.variants[2].verdict == FINE
