"""The guard's Prometheus metrics, on a registry owned by each :class:`GuardMetrics` instance.

No metric is registered on prometheus_client's global default registry, so tests and several
servers in one process never collide; a server exposes ``generate_latest(metrics.registry)``.
Metrics are observed at the decision point (the server, once per request or sentence), never in
the engine's hooks. Every label takes values from a fixed tuple below — never request ids or
text — and an unknown value raises :class:`~guard.errors.ConfigError`.

Names follow Prometheus' conventions (a unit or ``_ratio`` suffix, no repeated prefix). Renamed in 0.1.0, the
old names are still exported, with the same values, for this release only (marked DEPRECATED in their help):
``guard_guard_failures_total`` (now ``guard_failures_total``), ``guard_flag_rate_rolling`` and
``guard_flag_rate_expected`` (now with ``_ratio``).

Calibration drift: ``guard_flag_rate_rolling_ratio`` is the share of flagged sentences among the last
``window`` decided, scored sentences; ``guard_flag_rate_expected_ratio`` is the mean alpha those
sentences were judged at. Under exchangeability with the calibration data, the flag rate among
*true* sentences is at most alpha, so on a stream of mostly correct answers the rolling rate stays
near or below the expected one. A large, lasting excess means the traffic has shifted away from
the calibration distribution (the guarantee no longer holds) or the model is giving many false
answers; either way it is worth a look. ``guard/policy.py`` states the verdict rule behind it.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from guard.errors import ConfigError
from guard.verdicts import GuardSummary, SentenceVerdict

__all__ = ["GuardMetrics", "TokenHistogram", "ENDPOINTS", "DECISIONS", "MODES", "ABSTAIN_REASONS", "UPSTREAM_ERRORS",
           "GUARD_FAILURES", "FAILURE_POLICIES", "NONFINITE_SOURCES", "STEER_KINDS", "STEER_HOWS", "LATENCY_BUCKETS",
           "P_VALUE_BUCKETS"]

ENDPOINTS = ("chat_completions", "completions")
#: the policy's decisions, plus ``error`` for a request the guard could not complete
DECISIONS = ("pass", "flag", "abstain", "steer", "error")
MODES = ("pass", "flag", "abstain", "steer")
#: what made a choice steer (:class:`guard.verdicts.SteerPoint`): ``kind`` and ``how``
STEER_KINDS = ("gate", "sentence", "request")
STEER_HOWS = ("continue", "regenerate", "always")
#: ``gate``: the pre-generation gate; ``sentence``: a flagged sentence; ``guard_failure``: the guard could
#: not judge an answer (scores missing, reader failed) under ``fail_closed`` (the kinds of
#: :class:`guard.verdicts.Abstention`; a test holds the two equal)
ABSTAIN_REASONS = ("gate", "sentence", "answer", "guard_failure")
#: ``reader``: guard proxy's local reader engine failed (the other kinds name the upstream's failures)
UPSTREAM_ERRORS = ("timeout", "connection", "http_status", "protocol", "scores_missing", "reader", "answer_check",
                   "other")
#: why the guard could not judge an answer the upstream did produce: its scores did not arrive in
#: time (``scores_missing``), guard proxy's reader failed (``reader``), or the answer check's inputs did not all
#: come (``answer_check``)
GUARD_FAILURES = ("scores_missing", "reader", "answer_check")
#: whose hidden states went non-finite: a request that ``steered`` (refused, its own doing) or one that did not
#: (``unsteered``: the engine is broken and the server reports itself unhealthy)
NONFINITE_SOURCES = ("steered", "unsteered")
#: the ``on_guard_failure`` setting: pass the answer marked unverified, or abstain
FAILURE_POLICIES = ("fail_open", "fail_closed")
#: seconds: 50 µs to 5 s, dense below a millisecond where the guard's own overhead lives
LATENCY_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: p-values live in (0, 1]; dense where flags happen (small alphas)
P_VALUE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: shift of a sentence from the calibration data (guard.shift: 1 - the domain classifier's top probability)
SHIFT_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


def _check(label: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"metric label {label}={value!r} is not allowed: expected one of {', '.join(allowed)} "
                          "(labels take fixed values only; map the value to one of these)")
    return value


class GuardMetrics:
    """All guard metrics on one registry.

    Args:
        registry: where to register (a fresh :class:`CollectorRegistry` when ``None``).
        window: how many decided sentences the rolling flag rate covers.

    Raises:
        ConfigError: ``window`` is not positive.

    Example:
        >>> m = GuardMetrics()
        >>> m.record_request("chat_completions", mode="flag", decision="pass")
        >>> labels = {"endpoint": "chat_completions", "decision": "pass", "mode": "flag"}
        >>> m.registry.get_sample_value("guard_requests_total", labels)
        1.0
    """

    def __init__(self, registry: CollectorRegistry | None = None, window: int = 500) -> None:
        if window < 1:
            raise ConfigError(f"drift window={window!r} is invalid: expected a positive number of sentences, e.g. 500")
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("guard_requests", "Guarded requests by endpoint, decision and mode",
                                ["endpoint", "decision", "mode"], registry=r)
        self.abstentions = Counter("guard_abstentions", "Abstentions by reason", ["reason"], registry=r)
        self.flagged_sentences = Counter("guard_flagged_sentences", "Sentences whose conformal set lacks 'true'",
                                         registry=r)
        self.sentences_scored = Counter("guard_sentences_scored", "Sentences decided with at least one scored token",
                                        registry=r)
        self.tokens_scored = Counter("guard_tokens_scored", "Generated tokens whose probe score arrived", registry=r)
        self.sentence_p_true = Histogram("guard_sentence_p_true", "Conformal p-value of 'true' per decided sentence",
                                         buckets=P_VALUE_BUCKETS, registry=r)
        self.sentence_shift = Histogram("guard_sentence_shift", "Shift of each decided sentence from the probe's "
                                        "calibration domains (near 0 on familiar text; probes with a shift head)",
                                        buckets=SHIFT_BUCKETS, registry=r)
        self.shifted_sentences = Counter("guard_shifted_sentences", "Sentences judged uncertain because their text "
                                         "is unlike the probe's calibration data", registry=r)
        self.guard_latency = Histogram("guard_latency_seconds", "Latency the guard adds to a request",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.score_wait = Histogram("guard_score_wait_seconds", "The part of guard_latency_seconds spent waiting for "
                                    "the engine's scores (the gate's row, an answer's last scores)",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.guard_cpu = Histogram("guard_cpu_seconds", "CPU time of the guard's own work per request (guard serve's "
                                   "event-loop thread; no waits, no time the thread was preempted)",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.probe_latency = TokenHistogram("guard_probe_latency_seconds", "Delay from a token's text to its probe "
                                            "score", LATENCY_BUCKETS)
        r.register(self.probe_latency)
        self.upstream_errors = Counter("guard_upstream_errors", "Upstream (engine) failures by kind", ["kind"],
                                       registry=r)
        self.guard_failures = Counter("guard_failures", "Answers the guard could not judge, by kind and the "
                                      "on_guard_failure policy applied", ["kind", "policy"], registry=r)
        self._guard_failures_old = Counter("guard_guard_failures", "DEPRECATED: use guard_failures_total (removed "
                                           "in the next release)", ["kind", "policy"], registry=r)
        self.client_disconnects = Counter("guard_client_disconnects", "Requests (streamed or not) the client closed "
                                          "before their end "
                                          "(logged as status 499)", ["endpoint"], registry=r)
        self.steered = Counter("guard_steered", "Choices steered (mode 'steer') by trigger and how", ["kind", "how"],
                               registry=r)
        self.nonfinite = Counter("guard_nonfinite_scores", "Requests whose engine scores held NaN or infinity, by "
                                 "whether the request steered", ["source"], registry=r)
        self.in_flight = Gauge("guard_requests_in_flight", "Guarded requests being served", registry=r)
        self.flag_rate_rolling = Gauge("guard_flag_rate_rolling_ratio", "Share of flagged sentences among the last "
                                       "decided, scored ones", registry=r)
        self.flag_rate_expected = Gauge("guard_flag_rate_expected_ratio", "Mean alpha of the same sentences: the "
                                        "bound on the flag rate among true sentences", registry=r)
        self._flag_rate_old = (Gauge("guard_flag_rate_rolling", "DEPRECATED: use guard_flag_rate_rolling_ratio",
                                     registry=r),
                               Gauge("guard_flag_rate_expected", "DEPRECATED: use guard_flag_rate_expected_ratio",
                                     registry=r))
        self.build = Info("guard_build", "What this server runs: guard's version, the served model, the probe "
                          "artefact's file name and whether it is calibrated", registry=r)
        self._window: deque[tuple[bool, float]] = deque(maxlen=window)
        self._flagged = 0
        self._alpha_sum = 0.0
        self._lock = threading.Lock()
        self._request_counts: dict[tuple[str, str, str], Any] = {}  # labelled children, checked once per label set

    def describe(self, version: str, model: str, probe: str, calibrated: bool) -> None:
        """Set ``guard_build_info{version, model, probe, calibrated} 1`` (once, at start-up).

        Example:
            >>> m = GuardMetrics()
            >>> m.describe("0.1.0", "smollm2", "probe.safetensors", True)
            >>> m.registry.get_sample_value("guard_build_info", {"version": "0.1.0", "model": "smollm2",
            ...                             "probe": "probe.safetensors", "calibrated": "true"})
            1.0
        """
        self.build.info({"version": version, "model": model, "probe": probe, "calibrated": str(calibrated).lower()})

    def record_request(self, endpoint: str, mode: str, decision: str) -> None:
        """Count one finished request."""
        if (count := self._request_counts.get((endpoint, decision, mode))) is None:
            count = self._request_counts[endpoint, decision, mode] = self.requests.labels(
                _check("endpoint", endpoint, ENDPOINTS), _check("decision", decision, DECISIONS),
                _check("mode", mode, MODES))
        count.inc()

    def record_abstention(self, reason: str) -> None:
        """Count one abstention (``reason`` from :data:`ABSTAIN_REASONS`)."""
        self.abstentions.labels(_check("reason", reason, ABSTAIN_REASONS)).inc()

    def record_upstream_error(self, kind: str) -> None:
        """Count one upstream failure (``kind`` from :data:`UPSTREAM_ERRORS`)."""
        self.upstream_errors.labels(_check("kind", kind, UPSTREAM_ERRORS)).inc()

    def record_guard_failure(self, kind: str, policy: str) -> None:
        """Count one answer the guard could not judge (``kind`` from :data:`GUARD_FAILURES`) and its policy."""
        labels = (_check("kind", kind, GUARD_FAILURES), _check("policy", policy, FAILURE_POLICIES))
        self.guard_failures.labels(*labels).inc()
        self._guard_failures_old.labels(*labels).inc()

    def record_disconnect(self, endpoint: str) -> None:
        """Count one stream the client closed before it ended."""
        self.client_disconnects.labels(_check("endpoint", endpoint, ENDPOINTS)).inc()

    def record_nonfinite(self, source: str) -> None:
        """Count one request whose scores held NaN or infinity (``source`` from :data:`NONFINITE_SOURCES`)."""
        self.nonfinite.labels(_check("source", source, NONFINITE_SOURCES)).inc()

    def record_sentence(self, verdict: SentenceVerdict, alpha: float) -> None:
        """Count one decided sentence and update the drift gauges (unscored sentences only count tokens)."""
        if verdict.verdict == "unscored":
            return
        flagged = verdict.verdict == "flagged"
        self.sentences_scored.inc()
        if flagged:
            self.flagged_sentences.inc()
        if verdict.p_true is not None:
            self.sentence_p_true.observe(verdict.p_true)
        if verdict.shift is not None:
            self.sentence_shift.observe(verdict.shift)
            if verdict.shifted:
                self.shifted_sentences.inc()
        with self._lock:
            if len(self._window) == self._window.maxlen:
                old_flagged, old_alpha = self._window[0]
                self._flagged -= old_flagged
                self._alpha_sum -= old_alpha
            self._window.append((flagged, alpha))
            self._flagged += flagged
            self._alpha_sum += alpha
            rolling, expected = self._flagged / len(self._window), self._alpha_sum / len(self._window)
            self.flag_rate_rolling.set(rolling)
            self.flag_rate_expected.set(expected)
            self._flag_rate_old[0].set(rolling)
            self._flag_rate_old[1].set(expected)

    def record_summary(self, endpoint: str, summary: GuardSummary) -> None:
        """Record a finished choice: its request, abstention, sentences and scored tokens."""
        self.record_request(endpoint, summary.mode, summary.decision)
        self.record_choice(summary)

    def record_choice(self, summary: GuardSummary) -> None:
        """Record one choice's abstention, sentences and scored tokens (not its request: a request may have several)."""
        if summary.abstained is not None:
            self.record_abstention(summary.abstained.kind)
        if (steer := summary.steered) is not None:
            self.steered.labels(_check("kind", steer.kind, STEER_KINDS), _check("how", steer.how, STEER_HOWS)).inc()
            if steer.flagged is not None:  # the sentence steering replaced was decided too (drift counts it)
                self.record_sentence(steer.flagged, summary.alpha)
        for verdict in summary.sentences:
            self.record_sentence(verdict, summary.alpha)
        self.tokens_scored.inc(summary.counts.tokens_scored)

    def observe_guard_latency(self, seconds: float, waited: float | None = None, cpu: float | None = None) -> None:
        """Latency the guard added to one request (its own work and any text it held back); ``waited``: the
        part of it spent waiting for the engine's scores, ``cpu``: its work's CPU time (guard serve)."""
        self.guard_latency.observe(seconds)
        if waited is not None:
            self.score_wait.observe(waited)
        if cpu is not None:
            self.guard_cpu.observe(cpu)

    def observe_probe_latency(self, seconds: float) -> None:
        """Delay between a token's text and its probe score reaching the server."""
        self.probe_latency.observe(seconds)


class TokenHistogram(Collector):
    """A Prometheus histogram observed once per token: one list increment, no lock, no labels.

    prometheus_client's :class:`Histogram` takes two locks and walks its buckets per observation,
    which is a measurable share of the server's per-chunk work. This one is meant for one writer
    thread (the server's event loop, which also serves ``/metrics``); its exposition is the same
    (``_bucket{le}``, ``_count``, ``_sum``).

    Example:
        >>> h = TokenHistogram("demo_seconds", "demo", (0.1, 1.0))
        >>> h.observe(0.5)
        >>> [(s.name, s.labels.get("le"), s.value) for s in next(h.collect()).samples][:2]
        [('demo_seconds_bucket', '0.1', 0.0), ('demo_seconds_bucket', '1.0', 1.0)]
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation = name, documentation
        self._bounds = list(buckets)
        self._counts = [0] * (len(buckets) + 1)  # the last: above every bound (+Inf)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (``le`` buckets: a value on a bound counts in that bound's bucket)."""
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """The histogram as Prometheus exposes one."""
        cumulative = list(accumulate(self._counts))
        family = HistogramMetricFamily(self.name, self.documentation)
        # prometheus_client ships floatToGoString without annotations
        bounds = [floatToGoString(b) for b in self._bounds]  # type: ignore[no-untyped-call]
        family.add_metric([], [(b, float(c)) for b, c in zip(bounds, cumulative)]
                          + [("+Inf", float(cumulative[-1]))], sum_value=self._sum)
        yield family
