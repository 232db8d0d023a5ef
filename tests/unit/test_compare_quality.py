"""The quality math on plain arrays: self-comparison, exactness for a full top-k, the blob format."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.quality import Drift, ScoreResult, TopK, kl_to_reference, log_softmax, top_k


def _logprobs(seed: int, n: int = 40, vocab: int = 300, scale: float = 4.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return log_softmax(rng.standard_normal((n, vocab)).astype(np.float32) * scale)


def test_log_softmax_rows_sum_to_one():
    lp = _logprobs(1)
    assert np.allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-5)


def test_reference_against_itself_is_exactly_zero_and_agrees():
    lp = _logprobs(2)
    ref = TopK.from_bytes(top_k(lp, 16).to_bytes())
    kl, agree = kl_to_reference(ref, lp)
    assert np.all(kl == 0.0)
    assert agree.all()


def test_full_top_k_gives_the_exact_kl_divergence():
    p, q = _logprobs(3), _logprobs(4)
    exact = (np.exp(p.astype(np.float64)) * (p.astype(np.float64) - q)).sum(axis=1)
    kl, _ = kl_to_reference(top_k(p, p.shape[1]), q)
    assert np.allclose(kl, exact, rtol=1e-4, atol=1e-6)
    assert exact.mean() > 0.5  # the two are really different


def test_top_k_with_rest_bucket_is_a_lower_bound_that_tightens_with_k():
    p, q = _logprobs(5), _logprobs(6)
    full = kl_to_reference(top_k(p, p.shape[1]), q)[0]
    small = kl_to_reference(top_k(p, 8), q)[0]
    large = kl_to_reference(top_k(p, 64), q)[0]
    assert np.all(small <= full + 1e-5) and np.all(large <= full + 1e-5)
    assert small.mean() < large.mean() <= full.mean() + 1e-6


def test_closer_distributions_drift_less():
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((50, 200)).astype(np.float32) * 5
    ref = top_k(log_softmax(logits), 32)
    means = []
    for noise in (0.01, 0.3, 2.0):
        noisy = logits + rng.standard_normal(logits.shape).astype(np.float32) * noise
        kl, agree = kl_to_reference(ref, log_softmax(noisy))
        means.append((kl.mean(), agree.mean()))
    assert means[0][0] < means[1][0] < means[2][0]
    assert means[0][1] >= means[1][1] >= means[2][1]


def test_top1_is_the_argmax_and_ids_are_sorted():
    lp = _logprobs(8)
    ref = top_k(lp, 10)
    assert np.array_equal(ref.top1, lp.argmax(axis=1))
    vals = np.take_along_axis(lp, ref.ids.astype(np.intp), axis=1)
    assert np.all(np.diff(vals, axis=1) <= 0)
    assert np.allclose(ref.rest, 1 - np.exp(vals).sum(axis=1), atol=1e-6)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b[:10], "truncated"),
        (lambda b: b[:-4], "truncated"),
        (lambda b: b"XXXXX" + b[5:], "format"),
    ],
)
def test_damaged_blob_is_refused_with_a_reason(mangle, message):
    blob = top_k(_logprobs(9), 8).to_bytes()
    with pytest.raises(ValueError, match=message):
        TopK.from_bytes(mangle(blob))


def test_mismatched_positions_or_vocabulary_are_refused():
    ref = top_k(_logprobs(10, vocab=300), 8)
    with pytest.raises(ValueError, match="positions"):
        kl_to_reference(ref, _logprobs(11, n=39))
    with pytest.raises(ValueError, match="vocabulary"):
        kl_to_reference(ref, _logprobs(12, vocab=100))


def test_drift_accumulates_over_passes():
    d = Drift()
    assert d.summary()["kld_mean"] is None
    for kld in ([0.0, 2.0], [1.0]):
        n = len(kld)
        d.add(
            ScoreResult(
                tokens=[],
                start=1,
                nll=np.full(n, np.log(4.0), np.float32),
                kld=np.array(kld, np.float32),
                agree=np.array([True] * n),
            )
        )
    s = d.summary()
    assert s["positions"] == 3 and s["kld_mean"] == pytest.approx(1.0)
    assert s["top1_agreement"] == 1.0 and s["perplexity"] == pytest.approx(4.0, rel=1e-5)
