"""Messages between the parent and the engine child (plain dataclasses sent over a Pipe).

Requests carry an ``id``; every reply names the request it answers.  Token messages stream while a
generation runs; ``Done`` or ``Failed`` ends every request.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# ---- parent -> child ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """Sampling knobs; ``temperature == 0`` means greedy."""

    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int = 42

    @staticmethod
    def preset(name: str) -> Sampling:
        """The named presets the GUI and CLI offer: precise, balanced, creative."""
        presets = {
            "precise": Sampling(temperature=0.2, top_k=20, top_p=0.9, min_p=0.1),
            "balanced": Sampling(),
            "creative": Sampling(temperature=1.0, top_k=100, top_p=0.98, min_p=0.02),
            "greedy": Sampling(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0),
        }
        return presets[name]


@dataclass(frozen=True)
class MemorySettings:
    """The llama.cpp settings that change what a load reserves: one set for the plan, its dry run
    and the load, so a model is loaded with exactly what was planned (app.core.planning.PlanOptions
    adds the user's choices and the workloads to it)."""

    type_k: str = "f16"
    type_v: str = "f16"
    n_ubatch: int = 512
    # True: a full-size cache for sliding-window layers (llama-cpp-python's default).  Off, they
    # keep only their window (llama-server's default): at 32k tokens a Gemma 3 12B needs 0.5
    # instead of 10 GiB for them.  Appended chat turns still reuse the cache; a chat rewound past
    # the window is evaluated afresh (app.core.engine.host._window_reuse).
    swa_full: bool = False
    # None: llama.cpp's own automatic choice (its default): on wherever each layer's backend runs
    # it, which on CPU is every layer (less compute buffer, and faster: bench/memory_settings).
    flash_attn: bool | None = None
    cpu_moe_layers: int = 0  # keep the expert tensors of the first N layers in RAM (--n-cpu-moe)
    cpu_moe_extra: tuple[str, ...] = ()  # and these expert tensors of layer N (a finer step)
    # Logit rows one micro-batch may ask for (llama.cpp's n_outputs_max): 1 for a chat, which
    # needs the last position's only, so the compute buffer is not reserved for n_ubatch rows of
    # logits (hundreds of MiB on a large vocabulary, real VRAM on a GPU); 0 = n_batch rows, what a
    # comparison's scoring pass asks for.  A batch asking for more rows aborts llama.cpp, so the
    # engine refuses a scoring pass on a chat load (host_score).
    n_outputs_max: int = 1

    def memory(self) -> MemorySettings:
        """These settings as the plain message type (a subclass stays on the parent's side)."""
        return MemorySettings(**{f.name: getattr(self, f.name) for f in fields(MemorySettings)})


@dataclass(frozen=True)
class LoadRequest:
    path: str
    n_ctx: int = 4096
    n_gpu_layers: int = 0
    n_threads: int | None = None
    n_batch: int = 512
    use_mmap: bool = True
    memory: MemorySettings = field(default_factory=MemorySettings)
    # Workers (app.core.rpc, "host:port") whose devices take layers, and the share of the offloaded
    # layers per device in llama.cpp's order (workers first, then local GPUs): app.core.split.
    rpc_servers: tuple[str, ...] = ()
    tensor_split: tuple[float, ...] = ()
    # Prompt format: None picks one (the file's template, else llama.cpp's built-in one for the
    # family, else completion); or force "gguf", "builtin:NAME" or "completion" (app.core.chat_format).
    chat_format: str | None = None


@dataclass(frozen=True)
class GenerateRequest:
    """Chat ``messages`` (formatted by the model's own template) or a raw ``prompt``."""

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    max_tokens: int = 512
    sampling: Sampling = field(default_factory=Sampling)
    stream: bool = True
    ignore_eos: bool = False  # benchmarks and tests: always generate max_tokens
    grammar: str | None = None  # GBNF text: sample only what it allows (JSON replies)
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit before sampling


@dataclass(frozen=True)
class ScoreRequest:
    """Teacher-force a token sequence; compare the next-token distributions against ``reference``.

    The sequence is ``tokens``, or -- when ``messages`` is given -- the chat prompt formatted by the
    model's template followed by ``reply`` (scoring then starts at the reply).  Predictions of the
    tokens from index ``start`` on are scored.  With ``reference`` None the child returns its own
    top-``top_k`` log-probabilities (see app.core.quality) so the parent can hand them to the other
    variants; only those results cross the process boundary, never logits.  Answer: ScoreResult.
    """

    tokens: list[int] = field(default_factory=list)
    start: int = 1
    reference: bytes | None = None
    top_k: int = 64
    messages: list[dict[str, str]] | None = None
    reply: str | None = None


@dataclass(frozen=True)
class TokenizeRequest:
    text: str
    add_bos: bool = True


@dataclass(frozen=True)
class EmbedRequest:
    """Pooled, normalised embeddings of ``texts`` (models with a pooling layer only).

    Answer: ``{"embeddings": [[float, ...], ...], "prompt_tokens": int}``."""

    texts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DryRunRequest:
    """Plan memory without loading weights (no_alloc); the path may be a header-only sparse file."""

    path: str
    n_ctx: int
    n_gpu_layers: int = 0
    n_batch: int = 512
    memory: MemorySettings = field(default_factory=MemorySettings)


@dataclass(frozen=True)
class RenderRequest:
    """The prompt text ``messages`` turn into under the loaded model's chat format (answer: str)."""

    messages: list[dict[str, str]]


@dataclass(frozen=True)
class UnloadRequest:
    pass


@dataclass(frozen=True)
class DebugCrashRequest:
    """Make the child misbehave on purpose -- for tests and self-checks.

    ``abort``: die the way llama.cpp does (``ggml_abort``); ``kill``: SIGKILL itself; ``hang``: stop
    making progress without dying; ``alloc``: allocate memory until stopped.
    """

    how: str = "abort"


@dataclass(frozen=True)
class Request:
    id: int
    body: Any


# ---- child -> parent ------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedInfo:
    """What a load reports back: timings, context, the model's metadata and llama.cpp's buffers."""

    path: str
    n_ctx: int
    n_ctx_train: int
    n_gpu_layers: int
    load_s: float
    chat_template: str | None
    metadata: dict[str, str]
    buffers: dict[str, int]
    rss_bytes: int
    caches: tuple[Any, ...] = ()  # app.core.llama_log.CacheInfo: each KV cache / recurrent state
    chat_format: str = "completion"  # "gguf", "builtin:NAME" or "completion" (app.core.chat_format)
    n_threads: int = 0  # the threads generation runs with (chosen from the free cores unless set)
    flash_attn: bool | None = None  # whether the context uses it, as llama.cpp logged (or None)


@dataclass(frozen=True)
class GenerationStats:
    """Per reply: time to first token, prompt and generation speed, token counts, peak RSS."""

    text: str
    tokens: int
    prompt_tokens: int
    ttft_s: float
    prompt_tok_s: float
    gen_tok_s: float
    total_s: float
    stop_reason: str  # "eos" | "length" | "cancelled" | "context"
    peak_rss_bytes: int
    cached_prompt_tokens: int = 0  # prompt prefix reused from the previous turn's KV cache
    reasoning_tokens: int = 0  # generated tokens inside a <think>...</think> block
    chat_format: str = ""  # the prompt format the reply was made with (LoadedInfo.chat_format)

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass(frozen=True)
class Token:
    """A streamed piece of text; ``token`` is the count of tokens generated so far."""

    id: int
    text: str
    token: int


@dataclass(frozen=True)
class Done:
    id: int
    result: Any


@dataclass(frozen=True)
class Failed:
    id: int
    kind: str  # "load" | "template" | "request" | "internal"
    message: str
