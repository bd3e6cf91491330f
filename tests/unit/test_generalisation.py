"""Selection by left-out domains, the shift head, and what a shifted verdict looks like (no engine)."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.choose import select_probe
from calibration.export import probe_from
from calibration.families import fit_layer
from calibration.shift_fit import choose_beta, fit_domain_head, lodo_verdicts
from calibration.splits import dataset_splits, held_out_templates
from calibration.statements import generate_statements
from guard.heads import fused_head, split_columns
from guard.model_spec import ModelSpec
from guard.probe import ConformalCalibration, Probe
from guard.sentences import Sentence
from guard.shift import ShiftCalibration, shift_of_columns, shift_of_rows
from guard.verdicts import VerdictRule

H = 16
SPEC = ModelSpec.from_config({"model_type": "llama", "hidden_size": H, "num_hidden_layers": 8})


def _domains(n_domains: int = 5, per: int = 80, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Two sweep layers: layer 0 carries truth on one shared direction (weakly); layer 1 carries it strongly, but
    on a direction of its own in every domain (a probe fitted there is near perfect in-domain, useless on the
    next domain)."""
    rng = np.random.default_rng(seed)
    basis = np.eye(H)
    shared = basis[0]  # every domain's own direction is orthogonal to it and to the others'
    x, labels, domains = [], [], []
    for d in range(n_domains):
        own = basis[1 + d] * 3
        centre = rng.standard_normal(H) * 4
        y = rng.integers(0, 2, per)
        sign = (2 * y - 1)[:, None]
        layer0 = centre + 0.8 * sign * shared + rng.standard_normal((per, H))
        noise = np.full(H, 2.0)
        noise[1 + d] = 0.3  # quiet along its own direction, loud along every other domain's
        layer1 = centre + sign * own + noise * rng.standard_normal((per, H))
        x.append(np.stack([layer0, layer1], axis=1))
        labels.append(y)
        domains += [f"d{d}"] * per
    labels_all = np.concatenate(labels)
    neither = rng.random(len(labels_all)) < 0.15
    labels_all[neither] = 2
    return np.concatenate(x), labels_all, np.array(domains)


def test_leave_one_domain_out_selection_picks_the_generalising_layer_over_the_overfitting_one():
    x, labels, domains = _domains()
    train = np.arange(len(labels))
    template = np.arange(len(labels)) % 3
    sel = select_probe(x, labels, domains, template, np.zeros(len(labels), bool), train, ("logistic",), width=1)
    assert sel.best.window == (0,)
    assert sel.layer_auroc[0] > 0.8 > 0.65 > sel.layer_auroc[1]
    # the overfitting layer is the better *in-domain* fit: a fit-based choice would have taken it
    d0 = domains == "d0"
    fit = fit_layer("logistic", x[d0, 1], labels[d0], 3, 30.0)
    assert fit is not None and {c.window for c, _ in sel.ranked} == {(0,), (1,)}
    assert sel.ranked[0][1]["lodo_worst"] > sel.ranked[-1][1]["lodo_worst"]


def test_the_shift_score_separates_a_domain_it_never_saw_from_familiar_ones():
    x, labels, domains = _domains(n_domains=6)
    z = x[:, 0]
    seen = domains != "d5"
    head = fit_domain_head(z[seen], domains[seen])
    assert head.domains == ("d0", "d1", "d2", "d3", "d4")
    familiar, unfamiliar = head.shift(z[seen]), head.shift(z[~seen])
    assert np.median(unfamiliar) > np.quantile(familiar, 0.9)


def test_beta_is_chosen_on_left_out_domains_to_keep_confident_errors_within_target():
    x, labels, domains = _domains(n_domains=5)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(labels))
    train, cal = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])
    folds = lodo_verdicts(x, labels, domains, train, cal, np.arange(len(labels)), "logistic", 30.0, (1,), 0.1)
    assert [f.domain for f in folds] == [f"d{i}" for i in range(5)]
    beta, table = choose_beta(folds, labels, np.zeros(len(labels), bool))
    # the overfitting layer is confidently wrong on unseen domains; only the shift rule rescues the verdicts
    assert table[0.0]["confidently_wrong_worst"] > 0.1
    assert beta > 0 and table[beta]["confidently_wrong_worst"] <= table[0.0]["confidently_wrong_worst"]
    assert table[beta]["coverage_worst"] >= table[0.0]["coverage_worst"]


def _shift_probe(family: str) -> tuple[Probe, np.ndarray]:
    x, labels, domains = _domains(n_domains=4)
    fits = [fit_layer(family, x[:, li], labels, 3, 0.03 if family == "mlp" else 30.0) for li in (0, 1)]
    zbar = np.mean([(x[:, li] - f[-2]) / f[-1] for li, f in zip((0, 1), fits)], axis=0)
    head = fit_domain_head(zbar, domains)
    calib = ShiftCalibration(domains=head.domains, beta=0.1, scores=sorted(np.round(head.shift(zbar), 6).tolist()))
    conformal = ConformalCalibration(alpha=0.1, thresholds={"true": 0.5, "false": 0.5, "neither": 0.5},
                                     n_cal={"true": 9, "false": 9, "neither": 9})
    return probe_from(fits, (3, 5), family, SPEC, "m", {}, conformal, 0, (head, calib)), x


@pytest.mark.parametrize("family", ["logistic", "mlp"])
def test_the_fused_head_scores_labels_shift_and_gate_in_one_pass_exactly_as_the_reference(family, tmp_path):
    probe, x = _shift_probe(family)
    probe.save(tmp_path / "p")
    probe = Probe.load(tmp_path / "p")  # the shift head survives the artefact round trip
    gate = Probe.random(SPEC, (3, 5), labels=("incorrect", "correct"))
    w1, b1, w, b = fused_head(probe, gate)
    h = x.astype(np.float64)
    hidden = h if w1 is None else np.maximum(np.einsum("nlh,lhm->nlm", h, w1) + b1, 0.0)
    fused = np.einsum("nlm,lmo->nlo", hidden, w) + b
    labels, shift, gate_cols = split_columns(fused, probe)
    assert shift is not None and gate_cols is not None
    np.testing.assert_allclose(labels, probe.score(h), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(shift, probe.shift_columns(h), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gate_cols, gate.score(h), rtol=1e-4, atol=1e-4)
    assert probe.outputs == 3 + 4


def test_shift_of_rows_equals_shift_of_columns():
    cols = np.random.default_rng(3).standard_normal((3, 2, 5))
    np.testing.assert_allclose(shift_of_rows(cols.tolist()), shift_of_columns(cols), atol=1e-12)
    assert shift_of_rows([[[float("nan")] * 5] * 2]) is None


def test_a_shifted_sentence_gets_every_label_and_is_uncertain_and_says_why():
    probe, x = _shift_probe("logistic")
    rule = VerdictRule.from_probe(probe)
    assert rule.columns == 3 + 4
    sentence = Sentence(0, "Paris is in France.", 0, 19, 0, 4)
    sure = (0.97, 0.02, 0.01)
    calm = rule.judge(sentence, sure, 5, 0.1, shift=0.0)
    assert calm.verdict == "supported" and not calm.shifted
    lost = rule.judge(sentence, sure, 5, 0.1, shift=0.99)
    assert lost.verdict == "uncertain" and lost.shifted and lost.shift == 0.99
    assert lost.prediction_set == ("true", "false", "neither")


def test_the_stream_guard_reads_the_shift_columns_of_a_score_row():
    from guard.options import GuardOptions
    from guard.policy import StreamGuard

    probe, x = _shift_probe("logistic")
    rule = VerdictRule.from_probe(probe)
    guard = StreamGuard(rule, GuardOptions(mode="flag"))
    guard.add_text(0, "Paris is in France.")
    scores = np.zeros((1, 2, 7))
    scores[0, :, 0] = 6.0  # sure it is true
    scores[0, :, 3:] = 0.0  # no domain claims it: shift = 1 - 1/4
    guard.add_rows([0], scores)
    guard.finish()
    (verdict,) = guard.summary().sentences
    assert verdict.shifted and verdict.verdict == "uncertain" and abs(verdict.shift - 0.75) < 1e-9


def test_typicality_is_a_conformal_p_value_and_beta_zero_turns_the_rule_off():
    calib = ShiftCalibration(domains=("a", "b"), beta=0.25, scores=[0.1, 0.2, 0.3, 0.4])
    assert calib.typicality(0.0) == 1.0 and calib.typicality(0.35) == 2 / 5 and calib.typicality(0.9) == 1 / 5
    assert calib.shifted(0.9) and not calib.shifted(0.35)
    off = calib.model_copy(update={"beta": 0.0})
    assert not off.shifted(10.0)
    with pytest.raises(ValueError, match="sorted ascending"):
        ShiftCalibration(domains=("a", "b"), beta=0.1, scores=[0.3, 0.1])


def test_every_relation_holds_out_one_template_and_training_never_sees_it():
    statements = generate_statements(0)
    held = held_out_templates(statements, seed=0)
    relations = {s.domain for s in statements}
    assert {t.split("/")[0] for t in held} == relations  # one per relation
    splits = dataset_splits(statements, unknown=set(), seed=0)
    used = np.concatenate([splits.train, splits.cal])
    assert not any(statements[i].template in held for i in used)
    assert any(statements[i].template in held for i in splits.test)
    assert any(statements[i].negated for i in splits.train)  # negations are in the training mix by default


def test_the_quality_bench_reports_left_out_folds_and_each_probes_verdicts_per_domain():
    from benchmarks.quality_shift import generalisation, probe_verdicts
    from calibration.statements import Statement

    x, labels, domains = _domains(n_domains=4)
    templates = np.arange(len(labels)) % 3
    gen = generalisation(x[:, 0], labels, domains, templates, np.arange(len(labels)))
    assert set(gen["lodo"]) == {"d0", "d1", "d2", "d3"} and set(gen["loto"]) == {"0", "1", "2"}
    assert np.median(list(gen["lodo"].values())) > 0.8  # the shared direction transfers
    probe, _ = _shift_probe("logistic")
    names = ("true", "false", "neither")
    statements = [Statement(f"s{i}", names[y], str(d), negated=bool(i % 2)) for i, (y, d) in
                  enumerate(zip(labels, domains))]
    table = probe_verdicts(probe, x, statements, np.arange(len(labels)))
    assert set(table) == {"all", "d0", "d1", "d2", "d3"}
    assert table["all"]["n"] == len(labels) and all(0.0 <= r["coverage"] <= 1.0 for r in table.values())


def test_guard_evaluate_prints_one_row_per_file_with_the_verdict_columns():
    from calibration.commands import EVALUATE_COLUMNS, format_evaluation

    row = {c: 0.5 for c in EVALUATE_COLUMNS} | {"n": 8.0}
    summary = {"probe": "p.safetensors", "alpha": 0.1,
               "files": [{"file": "/data/mine.csv", "metrics": row},
                         {"file": "/data/negated.jsonl", "metrics": {"n": 2.0, "auroc_true_vs_false": 0.9}}]}
    lines = format_evaluation(summary).splitlines()
    header = next(line for line in lines if line.startswith("file"))
    assert header.split()[1:] == ["n", "auroc", "macro_f1", "ece", "covered", "set_size", "confident", "conf_wrong",
                                  "shifted"]
    mine = next(line for line in lines if line.startswith("mine.csv")).split()
    negated = next(line for line in lines if line.startswith("negated.jsonl")).split()
    assert mine[1] == "8" and mine[2:] == ["0.500"] * 8
    assert negated[1:3] == ["2", "0.900"] and negated[3:] == ["-"] * 7  # a metric a file lacks is shown as "-"


def test_selection_of_a_single_domain_user_file_falls_back_to_folds_of_whole_facts():
    x, labels, domains = _domains(n_domains=1, per=200)
    facts = np.array([f"f{i // 2}" for i in range(len(labels))])  # two statements per fact
    sel = select_probe(x, labels, np.array(["statements"] * len(labels)), np.zeros(len(labels), int),
                       np.zeros(len(labels), bool), np.arange(len(labels)), ("logistic",), width=1, facts=facts)
    assert set(sel.by_domain) == {f"fold {i}" for i in range(5)} and sel.best.window in {(0,), (1,)}


def test_folds_of_whole_facts_work_on_a_training_split_that_is_a_subset_of_the_statements():
    from calibration.selection import grouped_folds

    x, labels, _ = _domains(n_domains=1, per=200)
    facts = np.array([f"f{i // 2}" for i in range(len(labels))])
    train = np.flatnonzero(np.arange(len(labels)) % 5 != 0)  # like the pipeline's split: not 0..n-1
    folds = grouped_folds(facts, train, 5, 0, labels)
    assert len(folds) == 5
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == train.tolist()  # every training statement is tested once, nothing else
    for f in folds:
        assert set(f.train.tolist()) | set(f.test.tolist()) == set(train.tolist())
        assert not set(facts[f.train].tolist()) & set(facts[f.test].tolist())  # whole facts on one side


def test_a_left_out_wording_never_trains_on_another_wording_of_the_facts_it_tests():
    from calibration.selection import leave_one_out

    templates = np.array([0, 1, 0, 1, 0, 1])
    facts = np.array(["a", "a", "b", "b", "c", "d"])
    labels = np.zeros(6, int)
    (fold0, fold1) = leave_one_out(templates, np.arange(6), facts=facts)
    assert fold0.test.tolist() == [0, 2, 4] and fold0.train.tolist() == [5]  # 'a' and 'b' are tested: not trained
    assert fold1.test.tolist() == [1, 3, 5] and fold1.train.tolist() == [4]
    assert leave_one_out(templates, np.arange(6), labels=labels, facts=facts) == []  # no true/false to score


def test_a_probe_with_a_shift_head_refuses_rows_without_its_shift_columns():
    from guard.errors import AdapterError
    from guard.options import GuardOptions
    from guard.policy import StreamGuard

    probe, _ = _shift_probe("logistic")
    guard = StreamGuard(VerdictRule.from_probe(probe), GuardOptions(mode="flag"))
    guard.add_text(0, "Paris is in France.")
    with pytest.raises(AdapterError, match=r"shift head: a score row needs 7 columns \(3 labels"):
        guard.add_rows([0], np.zeros((1, 2, 3)))
    with pytest.raises(AdapterError, match="has a shift head: feed raw rows"):
        guard.add_probs(0, np.array([0.9, 0.05, 0.05]))
