"""Engine-child handler for :class:`ScoreRequest`: teacher-forced scoring, logits never leave.

The sequence is decoded in batches of the context's ``n_batch`` with an output requested for every
scored position (no ``logits_all`` on the model: llama.cpp sizes its output buffer per batch), the
logits of each batch are turned into log-probabilities and reduced at once to per-position numbers
(KL, agreement, NLL) or to the compressed top-k form, so memory stays at one batch of logits.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from app.core.engine.host import RequestError, _prompt, peak_rss
from app.core.engine.protocol import GenerateRequest, ScoreRequest
from app.core.quality import ScoreResult, TopK, kl_to_reference, log_softmax, top_k


def _sequence(state: Any, req: ScoreRequest) -> tuple[list[int], int]:
    llm = state.llm
    if req.messages is None:
        return list(req.tokens), req.start
    prompt, _stops, added_special = _prompt(state, GenerateRequest(messages=req.messages))
    head = llm.tokenize(prompt.encode("utf-8"), add_bos=not added_special, special=True)
    # The reply is model output: its text must not turn into control tokens.
    tail = llm.tokenize((req.reply or "").encode("utf-8"), add_bos=False, special=False)
    # Re-tokenizing can come out a token longer than what was generated: keep what fits.
    return (head + tail)[: llm.n_ctx()], len(head)


def handle(state: Any, req: ScoreRequest) -> ScoreResult:
    """Score ``req`` on the loaded model; see :class:`ScoreRequest` and app.core.quality."""
    llm = state.llm
    if llm is None:
        raise RequestError("no model is loaded")
    lc = state.llama_cpp
    cap = state.load.memory.n_outputs_max if state.load is not None else 0
    if 0 < cap < int(llm.n_batch):
        # llama.cpp aborts on a batch asking for more logit rows than the context reserved.
        raise RequestError(
            f"this model was loaded for chat ({cap} output per batch): scoring needs it loaded "
            "for every position (n_outputs_max=0, as a comparison loads it)"
        )
    tokens, start = _sequence(state, req)
    n = len(tokens)
    if start < 1 or start >= n:
        raise RequestError(f"nothing to score: {n} tokens, scoring from index {start}")
    if n > llm.n_ctx():
        raise RequestError(f"the sequence is {n} tokens but the context holds {llm.n_ctx()}")
    reference = None
    if req.reference is not None:
        try:
            reference = TopK.from_bytes(req.reference)
        except ValueError as exc:
            raise RequestError(str(exc)) from exc
        if reference.n != n - start:
            raise RequestError(
                f"the reference covers {reference.n} positions but {n - start} are scored"
            )
    t0 = time.perf_counter()
    ctx = llm._ctx.ctx
    n_vocab = llm.n_vocab()
    n_batch = max(1, int(llm.n_batch))
    llm.reset()  # Llama's own token cache no longer matches the KV cache after this pass
    lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
    batch = lc.llama_batch_init(n_batch, 0, 1)
    nll, kld, agree, parts = [], [], [], []
    try:
        # Position i predicts token i + 1: decode tokens[0 : n-1], outputs from start - 1 on.
        for b0 in range(0, n - 1, n_batch):
            b1 = min(n - 1, b0 + n_batch)
            batch.n_tokens = b1 - b0
            n_out = 0
            for j, pos in enumerate(range(b0, b1)):
                batch.token[j] = tokens[pos]
                batch.pos[j] = pos
                batch.n_seq_id[j] = 1
                batch.seq_id[j][0] = 0
                wanted = pos >= start - 1
                batch.logits[j] = wanted
                n_out += wanted
            rc = lc.llama_decode(ctx, batch)
            state.beat()  # the parent's watchdog: a long scoring pass is moving, not hung
            if rc != 0:
                raise RequestError(f"llama_decode failed with code {rc}")
            if n_out == 0:
                continue
            first = max(b0, start - 1)
            logits = np.ctypeslib.as_array(lc.llama_get_logits(ctx), shape=(n_out * n_vocab,))
            lp = log_softmax(logits.reshape(n_out, n_vocab))
            targets = np.asarray(tokens[first + 1 : b1 + 1], dtype=np.intp)
            nll.append(-lp[np.arange(n_out), targets])
            if reference is None:
                own = top_k(lp, req.top_k)
                parts.append(own)
                ref_part = own
            else:
                lo = first - (start - 1)
                ref_part = TopK(
                    reference.ids[lo : lo + n_out],
                    reference.logprobs[lo : lo + n_out],
                    reference.rest[lo : lo + n_out],
                    reference.top1[lo : lo + n_out],
                )
            try:
                k, a = kl_to_reference(ref_part, lp)
            except ValueError as exc:
                raise RequestError(str(exc)) from exc
            kld.append(k.astype(np.float32))
            agree.append(a)
    finally:
        lc.llama_batch_free(batch)
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
    return ScoreResult(
        tokens=tokens,
        start=start,
        nll=np.concatenate(nll).astype(np.float32),
        kld=np.concatenate(kld),
        agree=np.concatenate(agree),
        reference=TopK.concat(parts).to_bytes() if reference is None else None,
        seconds=time.perf_counter() - t0,
        peak_rss_bytes=peak_rss(),
    )
