"""The answer check on whole answers: the on-policy gate's fit, its two signals, the decision, and the held text."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.answer_gate import SamplingSettings, fit_answer_gate
from calibration.onpolicy import OnPolicyAnswer
from calibration.questions import generate_questions
from guard.answer_check import AnswerRule, AnswerTally
from guard.combiner import AnswerSampling
from guard.conformal import MondrianConformal
from guard.errors import ArtifactError
from guard.model_spec import ModelSpec
from guard.policy import GuardOptions, StreamGuard
from guard.probe import Probe
from guard.selective import SelectiveCalibration
from guard.verdicts import VerdictRule
from tests.unit.fake_upstream import make_gate

SPEC = ModelSpec(model_type="llama", num_layers=4, hidden_size=8, fingerprint="planted")


def _planted(n_per: int = 50, seed: int = 0) -> list[OnPolicyAnswer]:
    """Answers whose grade is written along one direction at the answer tokens (every relation alike) and, weaker,
    at the prompt's last token."""
    rng = np.random.default_rng(seed)
    out = []
    for domain in ("capital", "continent", "color"):
        for item in generate_questions(0, relations=[domain], wordings=1)[:n_per]:
            right = bool(rng.random() < 0.5)
            rows = rng.normal(size=(5, 2, 8)).astype(np.float16)
            rows[:, :, 0] += 1.5 if right else -1.5
            prompt = rng.normal(size=(2, 8)).astype(np.float16)
            prompt[:, 1] += 0.5 if right else -0.5
            text = f"It is {item.answers[0] if right else 'Atlantis'}."
            out.append(OnPolicyAnswer(item, text, tuple(range(6)), right, rng.normal(-1, 0.3, 6).astype(np.float32),
                                      prompt, rows, None))
    return out


def _tally_of(rule: AnswerRule, gate: Probe, a: OnPolicyAnswer) -> AnswerTally:
    """The answer check's signals for one stored answer, from ``gate``'s scores of its rows (as the engine scores)."""
    tally = AnswerTally()
    rule.add_prompt_row(tally, gate.score(a.prompt_row.astype(np.float32)[None])[0])
    rule.add_answer_rows(tally, gate.score(a.answer_rows.astype(np.float32)))
    tally.add_logprobs(a.token_logprobs.tolist(), len(a.token_ids))
    return tally


def test_on_policy_gate_is_fitted_and_certified_leave_one_domain_out_and_round_trips(tmp_path):
    answers = _planted()
    probe, report = fit_answer_gate(answers, [0, 1], (1, 2), SPEC, "planted", alpha=0.2)
    assert report["signals"]["answer"]["lodo_median"] > 0.9 > report["signals"]["logprob"]["lodo_median"]
    assert report["signals"]["combined"]["lodo_worst"] > 0.9
    combiner = probe.manifest.answer_combiner
    assert combiner is not None and combiner.signals == ("gate", "answer", "logprob")
    assert combiner.weights[1] > abs(combiner.weights[0])  # the answer's rows carry the grade here
    assert len(combiner.selective.confidences) == len(answers) and combiner.selective.threshold is not None
    assert report["selective"]["combined"]["coverage"] > report["selective"]["logprob"]["coverage"]
    loaded = Probe.load(probe.save(tmp_path / "gate.safetensors"))
    assert loaded.manifest.answer_combiner == combiner
    scope = loaded.manifest.question_scope  # the gate decides on its calibration wordings only
    assert scope is not None and {f.template for f in scope.frames} == {"capital/q0", "continent/q0", "color/q0"}
    assert scope.covers("What is the capital of Peru?") and not scope.covers("Who wrote Dracula?")
    scoped = report["gate_scope"]  # each relation left out is out of the others' scope: the gate stays off there
    assert scoped["trusted_everywhere"] and all(r["in_scope"] == 0 for r in scoped["left_out"].values())
    assert scoped["calibration_in_scope"] == 1.0 and scoped["new_facts"]["pooled"] > 0.6  # the prompt rows' grade
    # the artefact's scores give the signals the combiner was fitted on: the logit of the mean row
    rule, a = AnswerRule(loaded, offset=0), answers[0]
    tally = _tally_of(rule, loaded, a)
    mean_row = loaded.score(a.answer_rows.astype(np.float32).mean(0)[None])[0]
    assert np.mean(tally.logits) == pytest.approx(float(mean_row[:, 1].mean() - mean_row[:, 0].mean()), abs=1e-4)
    decision = rule.decide(tally)
    assert decision is not None and decision.answer == (decision.p_correct >= combiner.threshold_at())
    assert decision.logprob == pytest.approx(float(a.token_logprobs.mean()), abs=1e-5)


def test_samples_agreement_fits_a_second_combiner_certified_the_same_way(tmp_path):
    answers = _planted()
    rng = np.random.default_rng(1)
    # the samples agree with right answers more often: a signal the rows do not carry
    agreed = np.array([rng.choice([0.6, 0.8, 1.0]) if a.correct else rng.choice([0.0, 0.2, 0.4]) for a in answers])
    how = SamplingSettings(samples=5, temperature=0.7, max_tokens=24)
    probe, report = fit_answer_gate(answers, [0, 1], (1, 2), SPEC, "planted", alpha=0.2, agreement=agreed,
                                    sampling=how)
    sampling = probe.manifest.answer_sampling
    assert sampling is not None and (sampling.samples, sampling.temperature, sampling.max_tokens) == (5, 0.7, 24)
    assert sampling.combiner.signals == ("gate", "answer", "logprob", "agreement")
    assert sampling.combiner.weights[3] > 0 and len(sampling.combiner.selective.confidences) == len(answers)
    assert report["signals"]["agreement"]["lodo_median"] == 1.0  # agreement separates every planted relation
    assert report["signals"]["sampled"]["lodo_worst"] >= report["signals"]["combined"]["lodo_worst"]
    assert report["selective"]["sampled"]["coverage"] >= report["selective"]["combined"]["coverage"]
    loaded = Probe.load(probe.save(tmp_path / "gate.safetensors"))
    assert loaded.manifest.answer_sampling == sampling
    rule, a = AnswerRule(loaded, offset=0), answers[0]
    tally = _tally_of(rule, loaded, a)
    plain = rule.decide(tally)
    tally.agreement, tally.samples = 0.0, 5
    none_agree = rule.decide(tally)
    tally.agreement = 1.0
    all_agree = rule.decide(tally)
    assert plain is not None and none_agree is not None and all_agree is not None
    assert none_agree.p_correct < all_agree.p_correct and (all_agree.agreement, all_agree.samples) == (1.0, 5)
    assert plain.agreement is None and all_agree.threshold == sampling.combiner.threshold_at(all_agree.alpha)
    with pytest.raises(Exception, match="or neither"):
        fit_answer_gate(answers, [0, 1], (1, 2), SPEC, "planted", agreement=agreed)


def test_a_gate_without_a_sampled_combiner_refuses_an_agreement_and_bad_sampling_is_refused():
    rule, tally = AnswerRule(_combined_gate(), offset=3), AnswerTally()
    rule.add_prompt_row(tally, _rows(0.5, 1)[0])
    tally.agreement = 1.0
    with pytest.raises(ArtifactError, match="no sampled answer combiner"):
        rule.decide(tally)
    combiner = make_gate(answer_check=True, sampled=True).manifest.answer_sampling.combiner  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="samples >= 1"):
        AnswerSampling(samples=0, temperature=0.7, max_tokens=16, combiner=combiner)
    with pytest.raises(ValueError, match="must read 'agreement'"):
        AnswerSampling(samples=3, temperature=0.7, max_tokens=16, combiner=_combined_gate().manifest.answer_combiner)
    gate = make_gate(answer_check=True, sampled=True)
    other = gate.manifest.answer_sampling.model_copy(  # type: ignore[union-attr]
        update={"combiner": combiner.model_copy(update={"signals": ("agreement", "gate", "answer", "logprob")})})
    with pytest.raises(ArtifactError, match="sampled answer combiner reads"):
        AnswerRule(Probe(gate.manifest.model_copy(update={"answer_sampling": other}), gate.weight, gate.bias,
                         gate.mean, gate.scale), offset=0)


def _combined_gate() -> Probe:
    return make_gate(answer_check=True)


def _rows(p_correct: float, n: int, offset: int = 3) -> np.ndarray:
    rows = np.zeros((n, 1, offset + 2))
    rows[:, 0, offset:] = np.log([1 - p_correct, p_correct])
    return rows


def test_answer_rule_reads_the_prompt_row_and_the_mean_answer_logit_and_decides_at_any_alpha():
    rule = AnswerRule(_combined_gate(), offset=3)
    tally = AnswerTally()
    assert rule.decide(tally) is None  # no prompt row: the check cannot judge
    rule.add_prompt_row(tally, _rows(0.02, 1)[0])
    only_prompt = rule.decide(tally)
    assert only_prompt is not None and only_prompt.answer_logit == pytest.approx(np.log(0.02 / 0.98), abs=1e-5)
    rule.add_answer_rows(tally, _rows(0.9, 3))
    rule.add_answer_rows(tally, _rows(0.5, 1))
    d = rule.decide(tally)
    assert d is not None and d.answer_rows == 4
    assert d.answer_logit == pytest.approx(3 * np.log(9) / 4, abs=1e-5)
    assert d.p_correct == pytest.approx(1 / (1 + np.exp(-3 * np.log(9) / 4)), abs=1e-5)
    assert (d.threshold, d.certified, d.answer, d.alpha) == (0.15, True, True, 0.3) and d.reason() == ""
    assert d.logprob == -30.0  # no token log-probabilities: the floor, as in calibration
    tally.add_logprobs([-0.5, -1.5], 2)
    assert rule.decide(tally).logprob == pytest.approx(-1.0)  # type: ignore[union-attr]
    assert rule.decide(tally, tokens=3) is None  # 3 tokens generated, 2 log-probabilities came: cannot judge
    early = rule.decide(tally, tokens=2)  # rows past the answer's fed-back tokens are not read
    assert early is not None and early.answer_rows == 1 and early.answer_logit == pytest.approx(np.log(9), abs=1e-5)
    tally.add_logprobs(None, 1)  # a token came without one: the check cannot judge
    assert rule.decide(tally) is None
    tally.logprobs_missing = False
    strict = rule.decide(tally, alpha=0.001)  # nothing certified: Learn-then-Test abstains on every answer
    assert strict is not None and (strict.certified, strict.answer, strict.threshold) == (False, False, None)
    assert "certifies no threshold at answer_alpha 0.001" in strict.reason()
    low = AnswerTally()
    rule.add_prompt_row(low, _rows(0.5, 1)[0])
    rule.add_answer_rows(low, _rows(0.05, 2))
    no = rule.decide(low)
    assert no is not None and not no.answer and "< certified threshold 0.15" in no.reason()


def test_answer_rule_refuses_a_gate_without_a_combiner_or_one_over_other_signals():
    with pytest.raises(ArtifactError, match="calibrate-answers --ship"):
        AnswerRule(make_gate(), offset=0)
    gate = _combined_gate()
    other = gate.manifest.answer_combiner.model_copy(update={"signals": ("answer", "gate", "x")})  # type: ignore[union-attr]
    with pytest.raises(ArtifactError, match="'x'"):
        AnswerRule(Probe(gate.manifest.model_copy(update={"answer_combiner": other}), gate.weight, gate.bias,
                         gate.mean, gate.scale), offset=0)
    with pytest.raises(Exception, match="NaN or infinite"):
        AnswerRule(gate, offset=3).add_answer_rows(AnswerTally(), np.full((1, 1, 5), np.nan))


def _rule() -> VerdictRule:
    cal = [[i / 20 for i in range(1, 20)]] * 2
    return VerdictRule(("true", "false"), "last", MondrianConformal.from_scores(0.1, cal))


def _feed(guard: StreamGuard, texts: list[str], probs: list[tuple[float, float]]) -> str:
    out = []
    for i, (text, p) in enumerate(zip(texts, probs)):
        out.append(guard.add_text(10 + i, text).text)
        out.append(guard.add_probs(10 + i, np.array(p)).text)
    return "".join(out)


TEXTS = ["Paris is in France.", " Lima", " is in Peru.", ""]
GOOD = [(0.95, 0.05)] * 4


def test_whole_answer_mode_holds_verified_sentences_until_the_answer_is_judged():
    guard = StreamGuard(_rule(), GuardOptions(mode="abstain"), whole_answer=True)
    assert _feed(guard, TEXTS, GOOD) == ""  # both sentences verified, none sent yet
    assert guard.judge_answer(True).text == ""
    assert guard.finish().text == "Paris is in France. Lima is in Peru."
    assert guard.summary().decision == "pass"
    plain = StreamGuard(_rule(), GuardOptions(mode="abstain"))
    assert _feed(plain, TEXTS, GOOD) != ""  # without the answer check, verified sentences go out at once


def test_whole_answer_mode_sends_only_the_message_when_the_check_says_no():
    guard = StreamGuard(_rule(), GuardOptions(mode="abstain", abstain_message="No."), whole_answer=True)
    assert _feed(guard, TEXTS, GOOD) == ""
    said = guard.judge_answer(False, "p(correct)=0.1 < 0.4").text
    assert said == "No." and guard.finish().text == ""
    s = guard.summary()
    assert s.decision == "abstain" and s.abstained is not None and s.abstained.kind == "answer"
    assert "0.1 < 0.4" in s.abstained.detail
    # a flagged sentence still abstains on its own, and nothing held before it leaks
    flagged = StreamGuard(_rule(), GuardOptions(mode="abstain"), whole_answer=True)
    text = _feed(flagged, TEXTS, [(0.95, 0.05), (0.02, 0.98), (0.02, 0.98), (0.02, 0.98)]) + flagged.finish().text
    assert "Paris" not in text and flagged.summary().abstained.kind == "sentence"  # type: ignore[union-attr]


def test_other_modes_ignore_the_answer_decision():
    guard = StreamGuard(_rule(), GuardOptions(mode="flag"), whole_answer=True)
    sent = _feed(guard, TEXTS, GOOD)
    assert sent.startswith("Paris") and guard.judge_answer(False).text == ""
    assert guard.summary().decision == "pass"


def test_combiner_calibration_in_the_manifest_is_the_one_used():
    gate = _combined_gate()
    assert gate.manifest.answer_combiner is not None
    assert isinstance(gate.manifest.answer_combiner.selective, SelectiveCalibration)


def test_cross_fitted_answer_check_scores_no_item_with_a_fit_that_saw_it():
    from calibration.answer_gate import cross_fitted_answer_check
    from calibration.readings import reading_features

    answers = _planted()
    correct = np.array([a.correct for a in answers])
    prompt, mean = reading_features(answers, "prompt")[0], reading_features(answers, "mean")[0]
    logprob = np.array([a.mean_logprob for a in answers])
    p = cross_fitted_answer_check(prompt, mean, logprob, correct, seed=1)
    assert p.shape == (len(answers),) and ((0 < p) & (p < 1)).all()
    from guard.evaluation import auroc

    assert auroc(p, correct) > 0.9
    # a fold's scores do not depend on its own labels: flipping them leaves its confidences unchanged
    folds = np.random.default_rng(1).permutation(len(correct)) % 5
    flipped = correct.copy()
    flipped[folds == 0] = ~flipped[folds == 0]
    q = cross_fitted_answer_check(prompt, mean, logprob, flipped, seed=1)
    assert np.allclose(p[folds == 0], q[folds == 0]) and not np.allclose(p[folds == 1], q[folds == 1])
    # with the samples' agreement: rows that say nothing (shuffled), an agreement that is the grade on half the
    # answers and noise on the rest; the check reads it, cross-fitted the same way
    shuffle = np.random.default_rng(3).permutation(len(correct))
    agreed = np.where(np.arange(len(correct)) % 2 == 0, correct, np.random.default_rng(2).random(len(correct)))
    blind = cross_fitted_answer_check(prompt[shuffle], mean[shuffle], logprob, correct, seed=1)
    s = cross_fitted_answer_check(prompt[shuffle], mean[shuffle], logprob, correct, seed=1, agreement=agreed)
    assert auroc(blind, correct) < 0.7 < auroc(s, correct)
    s_flipped = cross_fitted_answer_check(prompt[shuffle], mean[shuffle], logprob, flipped, seed=1, agreement=agreed)
    assert np.allclose(s[folds == 0], s_flipped[folds == 0])


def test_the_samples_seed_is_the_same_for_a_conversation_in_every_process_and_differs_between_conversations():
    import subprocess
    import sys

    sampling = make_gate(answer_check=True, sampled=True).manifest.answer_sampling
    assert sampling is not None
    seeds = {q: sampling.seed_for(q) for q in ("What is the capital of France?", "What is the capital of Peru?",
                                               '[{"content": "Paris?", "role": "user"}]', "")}
    assert len(set(seeds.values())) == len(seeds) and all(0 <= s < 2**31 for s in seeds.values())
    code = ("from tests.unit.fake_upstream import make_gate; "
            "print(make_gate(answer_check=True, sampled=True).manifest.answer_sampling.seed_for("
            "'What is the capital of France?'))")
    for hash_seed in ("1", "2"):  # str hashing is randomised per process; the samples' seed must not be
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"PYTHONHASHSEED": hash_seed, "PATH": ""})
        assert int(out.stdout) == seeds["What is the capital of France?"]
