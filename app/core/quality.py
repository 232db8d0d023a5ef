"""Quality of a quant: compare next-token distributions of two variants of one model.

The math lives here, free of llama.cpp and Qt, so the engine child (``host_score``) and the parent
share one definition and unit tests can check it on plain arrays.

How the reference's distributions travel (the choice the design left open): the reference child
keeps, per position, its top ``k`` log-probabilities (ids int32, values float32), the log of the
mass left outside them, and its argmax.  Every other variant gathers its own log-probabilities at
those ids and puts the rest of its mass in one "other" bucket, so the KL divergence is computed over
k + 1 outcomes.  That is a lower bound of the full-vocabulary KL (merging outcomes never increases
KL) and equals it when ``k >= n_vocab``; with k = 64 the bucket holds a negligible share of the mass
for the peaked distributions where quants differ.  A blob is ~8.5 bytes x k per position (about half
a kilobyte at k = 64), so a few thousand positions cross the pipe in a few MB -- a full 32k-vocab
distribution would be 64 KB per position.  Values are float32 and computed the same way on both
sides, so the reference scored against its own blob gives exactly KL 0 and agreement 1.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

_MAGIC = b"QDTK1"
_HEADER = struct.Struct("<5sII")  # magic, positions, k
DEFAULT_TOP_K = 64


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32 (rows: positions, columns: vocabulary)."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=1, keepdims=True)
    # In place, in float32: this runs on every batch of a KL pass (n_batch x n_vocab values).
    shifted -= np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return shifted


@dataclass
class TopK:
    """The reference's compressed distributions for ``n`` positions."""

    ids: np.ndarray  # int32 (n, k), ordered by falling probability
    logprobs: np.ndarray  # float32 (n, k)
    rest: np.ndarray  # float32 (n,): probability mass outside the k ids
    top1: np.ndarray  # int32 (n,): argmax of the full distribution

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])

    def to_bytes(self) -> bytes:
        n, k = self.ids.shape
        return b"".join(
            (
                _HEADER.pack(_MAGIC, n, k),
                np.ascontiguousarray(self.ids, dtype="<i4").tobytes(),
                np.ascontiguousarray(self.logprobs, dtype="<f4").tobytes(),
                np.ascontiguousarray(self.rest, dtype="<f4").tobytes(),
                np.ascontiguousarray(self.top1, dtype="<i4").tobytes(),
            )
        )

    @staticmethod
    def from_bytes(blob: bytes) -> TopK:
        if len(blob) < _HEADER.size:
            raise ValueError("the reference distributions are truncated")
        magic, n, k = _HEADER.unpack_from(blob)
        if magic != _MAGIC:
            raise ValueError("the reference distributions are not in a format this version reads")
        if len(blob) != _HEADER.size + n * k * 8 + n * 8:
            raise ValueError("the reference distributions are truncated")
        off = _HEADER.size

        def take(dtype: str, count: int) -> np.ndarray:
            nonlocal off
            arr = np.frombuffer(blob, dtype=dtype, count=count, offset=off)
            off += arr.nbytes
            return arr

        ids = take("<i4", n * k).reshape(n, k)
        logprobs = take("<f4", n * k).reshape(n, k)
        rest = take("<f4", n)
        top1 = take("<i4", n)
        return TopK(ids, logprobs, rest, top1)

    @staticmethod
    def concat(parts: list[TopK]) -> TopK:
        return TopK(
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.logprobs for p in parts]),
            np.concatenate([p.rest for p in parts]),
            np.concatenate([p.top1 for p in parts]),
        )


def _rest_mass(logprobs_at_ids: np.ndarray) -> np.ndarray:
    # The same expression on both sides, so that self-comparison cancels to exactly zero.
    return np.clip(1.0 - np.exp(logprobs_at_ids).sum(axis=1, dtype=np.float32), 0.0, 1.0)


def top_k(logprobs: np.ndarray, k: int) -> TopK:
    """Compress full log-probabilities (n, V) to the reference form."""
    n, vocab = logprobs.shape
    k = min(k, vocab)
    if k == vocab:
        part = np.broadcast_to(np.arange(vocab), (n, vocab))
    else:
        part = np.argpartition(-logprobs, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(logprobs, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1).astype(np.int32)
    vals = np.take_along_axis(vals, order, axis=1).astype(np.float32)
    return TopK(ids, vals, _rest_mass(vals), logprobs.argmax(axis=1).astype(np.int32))


def kl_to_reference(reference: TopK, logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-position KL(reference || variant) in nats and top-1 agreement (bool), on the k+1 buckets."""
    if logprobs.shape[0] != reference.n:
        raise ValueError(
            f"the reference covers {reference.n} positions but {logprobs.shape[0]} were scored"
        )
    if int(reference.ids.max(initial=0)) >= logprobs.shape[1]:
        raise ValueError(
            "the reference uses token ids this model does not have (another vocabulary?)"
        )
    q = np.take_along_axis(logprobs, reference.ids.astype(np.intp), axis=1)
    q_rest = _rest_mass(q).astype(np.float64)
    p_log = reference.logprobs.astype(np.float64)
    p = np.exp(p_log)
    kl = (p * (p_log - q.astype(np.float64))).sum(axis=1)
    p_rest = reference.rest.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = np.where(
            p_rest > 0, p_rest * (np.log(p_rest) - np.log(np.maximum(q_rest, 1e-30))), 0.0
        )
    kl = np.maximum(kl + tail, 0.0)  # rounding can leave -1e-9 where the two are equal
    agree = logprobs.argmax(axis=1) == reference.top1
    return kl, agree


@dataclass
class ScoreResult:
    """What a scoring pass sends back: per-position numbers only, never logits.

    Without a reference given, the pass makes one: ``reference`` then holds this variant's own
    compressed distributions (``TopK.to_bytes``) for the other variants, and ``kld``/``agree`` are
    computed against that blob (a real self-comparison: 0 and 1).
    """

    tokens: list[int]
    start: int
    nll: np.ndarray  # float32 per scored position: -log p(actual next token)
    kld: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    agree: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    reference: bytes | None = None
    seconds: float = 0.0
    peak_rss_bytes: int = 0


@dataclass
class Drift:
    """Accumulated drift of one variant from the reference over one or more scoring passes."""

    positions: int = 0
    kld_sum: float = 0.0
    agree_sum: int = 0
    nll_sum: float = 0.0
    kld_values: list[np.ndarray] = field(default_factory=list, repr=False)

    def add(self, result: ScoreResult) -> None:
        self.positions += int(result.nll.size)
        self.nll_sum += float(result.nll.sum(dtype=np.float64))
        if result.kld.size:
            self.kld_sum += float(result.kld.sum(dtype=np.float64))
            self.agree_sum += int(result.agree.sum())
            self.kld_values.append(result.kld)

    def summary(self) -> dict[str, float | int | None]:
        """kld_mean, kld_p99, top1_agreement, perplexity, positions (plain numbers for JSON)."""
        n = self.positions
        if n == 0:
            return {
                "kld_mean": None,
                "kld_p99": None,
                "top1_agreement": None,
                "perplexity": None,
                "positions": 0,
            }
        values = np.concatenate(self.kld_values) if self.kld_values else np.zeros(1)
        return {
            "kld_mean": self.kld_sum / n,
            "kld_p99": float(np.percentile(values, 99)),
            "top1_agreement": self.agree_sum / n,
            "perplexity": float(np.exp(self.nll_sum / n)),
            "positions": n,
        }
