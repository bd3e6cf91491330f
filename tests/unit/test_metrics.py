"""Guard metrics: exact exposition after known events, bounded labels, drift gauges, the dashboard's names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from guard.errors import ConfigError
from guard.metrics import GuardMetrics
from guard.verdicts import AbstainReason, GuardSummary, SentenceVerdict, VerdictCounts

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "guard-dashboard.json"


def _verdict(index: int, verdict: str, p_true: float | None) -> SentenceVerdict:
    return SentenceVerdict(index=index, start=0, end=1, first=0, last=0, verdict=verdict, p_true=p_true,
                           prediction_set=(), probs=None, tokens_scored=0 if verdict == "unscored" else 1)


def _samples(metrics: GuardMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if not s.name.endswith("_created")}


def test_exposition_has_the_exact_counts_after_a_known_sequence_of_events():
    m = GuardMetrics()
    flagged = GuardSummary(
        decision="abstain", mode="abstain", alpha=0.1, score=0.04,
        abstained=AbstainReason(kind="sentence", alpha=0.1, sentence=1, p_true=0.04),
        sentences=(_verdict(0, "supported", 0.9), _verdict(1, "flagged", 0.04)),
        counts=VerdictCounts(sentences=2, supported=1, flagged=1, tokens=9, tokens_scored=8))
    clean = GuardSummary(decision="pass", mode="flag", alpha=0.2, score=0.5, abstained=None,
                         sentences=(_verdict(0, "uncertain", 0.5), _verdict(1, "unscored", None)),
                         counts=VerdictCounts(sentences=2, uncertain=1, unscored=1, tokens=4, tokens_scored=3))
    m.record_summary("chat_completions", flagged)
    m.record_summary("completions", clean)
    m.record_summary("completions", clean)
    m.record_abstention("gate")
    m.record_upstream_error("timeout")
    m.observe_guard_latency(0.0002)
    m.observe_probe_latency(0.003)
    m.in_flight.inc()
    s = _samples(m)
    assert s[("guard_requests_total",
              (("decision", "abstain"), ("endpoint", "chat_completions"), ("mode", "abstain")))] == 1
    assert s[("guard_requests_total", (("decision", "pass"), ("endpoint", "completions"), ("mode", "flag")))] == 2
    assert s[("guard_abstentions_total", (("reason", "sentence"),))] == 1
    assert s[("guard_abstentions_total", (("reason", "gate"),))] == 1
    assert s[("guard_flagged_sentences_total", ())] == 1
    assert s[("guard_sentences_scored_total", ())] == 4  # unscored sentences are not scored
    assert s[("guard_tokens_scored_total", ())] == 14
    assert s[("guard_sentence_p_true_count", ())] == 4
    assert s[("guard_sentence_p_true_bucket", (("le", "0.05"),))] == 1
    assert s[("guard_sentence_p_true_bucket", (("le", "0.5"),))] == 3
    assert s[("guard_sentence_p_true_sum", ())] == pytest.approx(0.9 + 0.04 + 0.5 + 0.5)
    assert s[("guard_latency_seconds_bucket", (("le", "0.0001"),))] == 0
    assert s[("guard_latency_seconds_bucket", (("le", "0.00025"),))] == 1
    assert s[("guard_probe_latency_seconds_count", ())] == 1
    assert s[("guard_upstream_errors_total", (("kind", "timeout"),))] == 1
    assert s[("guard_requests_in_flight", ())] == 1
    assert s[("guard_flag_rate_rolling_ratio", ())] == pytest.approx(1 / 4)
    assert s[("guard_flag_rate_expected_ratio", ())] == pytest.approx((0.1 * 2 + 0.2 * 2) / 4)


def test_the_drift_window_forgets_the_oldest_sentences():
    m = GuardMetrics(window=3)
    for i, verdict in enumerate(["flagged", "flagged", "supported", "supported", "supported"]):
        m.record_sentence(_verdict(i, verdict, 0.5), alpha=0.1 if i < 2 else 0.2)
    assert m.registry.get_sample_value("guard_flag_rate_rolling_ratio") == 0.0
    assert m.registry.get_sample_value("guard_flag_rate_expected_ratio") == pytest.approx(0.2)
    m.record_sentence(_verdict(5, "flagged", 0.01), alpha=0.05)
    assert m.registry.get_sample_value("guard_flag_rate_rolling_ratio") == pytest.approx(1 / 3)
    assert m.registry.get_sample_value("guard_flag_rate_expected_ratio") == pytest.approx(0.15)


@pytest.mark.parametrize(("call", "value"), [
    (lambda m: m.record_request("v1/chat/completions?user=bob", "flag", "pass"), "v1/chat/completions?user=bob"),
    (lambda m: m.record_abstention("the model said something rude"), "the model said something rude"),
    (lambda m: m.record_upstream_error("req-1234"), "req-1234"),
])
def test_labels_take_only_fixed_values(call, value):
    with pytest.raises(ConfigError, match=re.escape(f"={value!r} is not allowed: expected one of")):
        call(GuardMetrics())


def test_instances_own_their_registries_and_never_touch_the_global_one():
    from prometheus_client import REGISTRY

    before = set(REGISTRY._names_to_collectors)
    a, b = GuardMetrics(), GuardMetrics(CollectorRegistry())
    a.record_abstention("gate")
    assert b.registry.get_sample_value("guard_abstentions_total", {"reason": "gate"}) is None
    assert set(REGISTRY._names_to_collectors) == before


def test_every_metric_the_dashboard_queries_exists_in_the_registry():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    referenced = {name for expr in exprs for name in re.findall(r"\bguard_[a-z0-9_]+", expr)}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "info": ("_info",)}
    exposed = {family.name + suffix for family in GuardMetrics().registry.collect()
               for suffix in suffixes[family.type]}
    assert referenced and referenced <= exposed, referenced - exposed
    assert {"guard_flag_rate_rolling_ratio", "guard_flag_rate_expected_ratio",
            "guard_latency_seconds_bucket"} <= referenced


def test_the_per_token_histogram_exposes_exactly_what_prometheus_clients_histogram_does():
    import random

    from prometheus_client import Histogram

    from guard.metrics import LATENCY_BUCKETS, TokenHistogram

    reference, fast = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram("x_seconds", "doc", buckets=LATENCY_BUCKETS, registry=reference)
    tally = TokenHistogram("x_seconds", "doc", LATENCY_BUCKETS)
    fast.register(tally)
    rng = random.Random(0)
    for value in [*LATENCY_BUCKETS, 0.0, 99.0, *(rng.expovariate(200.0) for _ in range(500))]:  # bounds included
        histogram.observe(value)
        tally.observe(value)
    expected = [line for line in generate_latest(reference).decode().splitlines() if "_created" not in line]
    assert generate_latest(fast).decode().splitlines() == expected


def test_renamed_metrics_keep_their_old_names_with_the_same_values_for_one_release():
    from guard.metrics import GuardMetrics as Metrics

    m = Metrics(window=4)
    m.record_guard_failure("reader", "fail_open")
    m.record_guard_failure("reader", "fail_open")
    labels = {"kind": "reader", "policy": "fail_open"}
    assert m.registry.get_sample_value("guard_failures_total", labels) == 2.0
    assert m.registry.get_sample_value("guard_guard_failures_total", labels) == 2.0
    text = generate_latest(m.registry).decode()
    assert "# HELP guard_guard_failures_total DEPRECATED: use guard_failures_total" in text
    m.record_sentence(_verdict(0, "flagged", 0.01), alpha=0.1)
    m.record_sentence(_verdict(1, "supported", 0.5), alpha=0.2)
    assert m.registry.get_sample_value("guard_flag_rate_rolling_ratio") == pytest.approx(0.5)
    for new, old in (("guard_flag_rate_rolling_ratio", "guard_flag_rate_rolling"),
                     ("guard_flag_rate_expected_ratio", "guard_flag_rate_expected")):
        assert m.registry.get_sample_value(new) == m.registry.get_sample_value(old)
