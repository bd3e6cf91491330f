"""Latency statistics for the proxy benchmark: quantiles, bootstrap intervals, Prometheus histogram quantiles.

All inputs and outputs are milliseconds unless a name says otherwise. Bootstrap resampling is
seeded, so the same samples always give the same interval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = ["distribution", "difference_ci", "median_ci", "histogram_quantile"]

_RESAMPLES = 2000


def distribution(values: Sequence[float]) -> dict[str, float | int]:
    """``n``, ``p50``, ``p90``, ``p99``, ``mean`` and ``max`` of ``values`` (linear-interpolated quantiles).

    Raises:
        ValueError: ``values`` is empty.

    Example:
        >>> distribution([1.0, 2.0, 3.0])["p50"]
        2.0
    """
    if len(values) == 0:
        raise ValueError("no samples to summarise: every request of this arm failed or none was sent")
    a = np.asarray(values, dtype=float)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"n": int(a.size), "p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(a.mean()),
            "max": float(a.max())}


def _interval(stat: Callable[[np.ndarray], np.ndarray], samples: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.percentile(stat(samples), [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def difference_ci(guard: Sequence[float], direct: Sequence[float], q: float, level: float = 0.95,
                  seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of ``quantile(guard, q) - quantile(direct, q)`` (the two samples resampled apart).

    Example:
        >>> low, high = difference_ci([2.0, 3.0, 4.0], [1.0, 2.0, 3.0], 0.5)
        >>> low <= 1.0 <= high
        True
    """
    rng = np.random.default_rng(seed)
    g, d = np.asarray(guard, dtype=float), np.asarray(direct, dtype=float)
    gi = rng.integers(0, g.size, (_RESAMPLES, g.size))
    di = rng.integers(0, d.size, (_RESAMPLES, d.size))
    diffs = np.quantile(g[gi], q, axis=1) - np.quantile(d[di], q, axis=1)
    return _interval(lambda x: x, diffs, level)


def median_ci(values: Sequence[float], level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the median of ``values`` (e.g. paired differences).

    Example:
        >>> median_ci([1.0, 1.0, 1.0])
        (1.0, 1.0)
    """
    rng = np.random.default_rng(seed)
    a = np.asarray(values, dtype=float)
    return _interval(lambda x: np.median(x[rng.integers(0, x.size, (_RESAMPLES, x.size))], axis=1), a, level)


def histogram_quantile(buckets: Mapping[float, float], q: float) -> tuple[float, float, float] | None:
    """A quantile of a Prometheus histogram: a linear estimate inside its bucket, and the bucket's edges.

    Args:
        buckets: cumulative counts by upper bound ``le`` (``inf`` included), e.g. the difference of two
            scrapes of ``*_bucket``.
        q: the quantile, in [0, 1].

    Returns:
        ``(estimate, lower, upper)`` in the buckets' unit: the quantile lies in ``(lower, upper]``, and
        the estimate interpolates there as Prometheus' ``histogram_quantile`` does (``upper`` is ``inf``
        and the estimate ``lower`` beyond the largest finite bucket); ``None`` for an empty histogram.

    Example:
        >>> histogram_quantile({1.0: 1, 3.0: 3, float("inf"): 3}, 0.5)  # two of three samples in (1, 3]
        (1.5, 1.0, 3.0)
    """
    edges = sorted(buckets)
    total = buckets[edges[-1]] if edges else 0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for edge in edges:
        count = buckets[edge]
        if count >= rank:
            if edge == float("inf"):
                return lower, lower, edge
            inside = count - below
            fraction = (rank - below) / inside if inside > 0 else 1.0
            return lower + (edge - lower) * fraction, lower, edge
        lower, below = edge, count
    return lower, lower, float("inf")
