"""Child side of ``EmbedRequest``: pooled, L2-normalised embeddings from the loaded model.

Only a model with a pooling layer (``<arch>.pooling_type`` mean, CLS or last: embedding models)
embeds; a text-generation model has none and is refused in words.  The model stays loaded for
generation: embeddings are switched on for these decodes only, and the KV cache is cleared after
them, so the next reply evaluates its prompt afresh.
"""

from __future__ import annotations

from typing import Any

from app.core.engine.host import RequestError, State
from app.core.engine.protocol import EmbedRequest
from app.core.errors import ErrorKind


def handle(state: State, req: EmbedRequest) -> dict[str, Any]:
    """``{"embeddings": [[float, ...], ...], "prompt_tokens": n}`` for ``req.texts``."""
    llm = state.llm
    if llm is None:
        raise RequestError("no model is loaded")
    lc = state.llama_cpp
    pooling = lc.llama_pooling_type(llm._ctx.ctx)
    if pooling not in (
        lc.LLAMA_POOLING_TYPE_MEAN,
        lc.LLAMA_POOLING_TYPE_CLS,
        lc.LLAMA_POOLING_TYPE_LAST,
    ):
        raise RequestError(
            "this model does not embed: it has no pooling layer (a text-generation model); "
            "use an embedding model",
            ErrorKind.UNSUPPORTED,
        )
    limit = min(llm.n_batch, llm.n_ctx())
    for i, text in enumerate(req.texts):
        n = len(llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))
        if n > limit:
            raise RequestError(f"input {i} is {n} tokens; this model embeds at most {limit}")
    lc.llama_set_embeddings(llm._ctx.ctx, True)
    llm.context_params.embeddings = True  # llama-cpp-python's embed() checks its own copy
    try:
        vectors, count = llm.embed(
            list(req.texts), normalize=True, truncate=False, return_count=True
        )
    finally:
        llm.context_params.embeddings = False
        lc.llama_set_embeddings(llm._ctx.ctx, False)
        # embed() fills the KV cache with the texts but leaves input_ids as the last chat had
        # them: forget both, or the next reply would reuse positions that now hold the texts.
        llm._ctx.kv_cache_clear()
        llm.reset()
    return {"embeddings": [[float(x) for x in v] for v in vectors], "prompt_tokens": int(count)}
