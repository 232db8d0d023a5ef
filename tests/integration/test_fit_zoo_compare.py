"""A comparison decides parallel or sequential from the scoring-pass plan (real llama.cpp dry runs).

On a large vocabulary the scoring pass holds a whole batch of logits (512 rows x 262k tokens x 4
bytes = 512 MiB per copy), which a chat never does: a budget between the two totals must give
"sequential", where the chat plans alone would have said "parallel".
"""

from __future__ import annotations

import pytest

from app.core.gguf_header import read_local
from tests import zoo


def test_compare_on_a_large_vocabulary_uses_the_scoring_plan(planner):
    files = [(p, read_local(p)) for p in (zoo.small_path("gemma3"), zoo.small_path("cohere2"))]
    n_ctx = 1024
    chat = [planner.need_bytes(p, s, n_ctx) for p, s in files]
    # The reference (the first) keeps its top-k distributions too: two more copies of the logits.
    roles = ("reference", "score")
    score = [
        planner.need_bytes(p, s, n_ctx, workload=w) for (p, s), w in zip(files, roles, strict=True)
    ]
    for (_, spec), c, s, copies in zip(files, chat, score, (6, 4), strict=True):
        assert spec.n_vocab >= 256000
        logits = 512 * spec.n_vocab * 4  # a batch of logits, in the compute and output buffers
        assert s - c >= (copies - 0.1) * logits  # and numpy's copies
    budget = (sum(chat) + sum(score)) // 2
    run = planner.plan_compare(files, n_ctx, budget, reference=0)
    assert run.mode == "sequential", run.reason
    assert run.need_bytes == score
    assert sum(chat) <= budget  # what the chat plans alone would have allowed
    assert planner.plan_compare(files, n_ctx, sum(score)).mode == "parallel"
    with pytest.raises(ValueError):
        planner.need_bytes(files[0][0], files[0][1], n_ctx, workload="train")
