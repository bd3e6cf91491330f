"""The answer study on planted data: it finds the reading and the signal that generalise across domains."""

from __future__ import annotations

import numpy as np

from calibration.answer_store import load_answers, save_answers
from calibration.answer_study import domain_auroc, lodo_logits, study_answers
from calibration.onpolicy import OnPolicyAnswer
from calibration.questions import generate_questions

DOMAINS = ("capital", "continent", "color")


def _planted(n_per: int = 60, seed: int = 0) -> tuple[list[OnPolicyAnswer], list[list[str]]]:
    """Answers whose correctness is written along one direction at the answer tokens only (every domain alike),
    with the samples agreeing more often with right answers."""
    rng = np.random.default_rng(seed)
    answers, samples = [], []
    for domain in DOMAINS:
        items = generate_questions(0, relations=[domain], wordings=2)[:n_per]
        for item in items:
            right = bool(rng.random() < 0.5)
            rows = rng.normal(size=(6, 2, 8)).astype(np.float16)
            rows[2:4, :, 0] += 2.0 if right else -2.0  # the answer tokens carry it
            said = item.answers[0] if right else "Atlantis"
            text = f"It is {said}."
            others = [text if rng.random() < (0.8 if right else 0.3) else "I do not know." for _ in range(5)]
            answers.append(OnPolicyAnswer(item, text, tuple(range(7)), right, rng.normal(-1, 0.3, 7).astype(np.float32),
                                          rng.normal(size=(2, 8)).astype(np.float16), rows, (2, 4)))
            samples.append(others)
    return answers, samples


def test_lodo_logits_read_a_direction_shared_by_every_domain():
    answers, _ = _planted()
    x = np.stack([a.answer_rows[2:4].astype(np.float32).mean(0) for a in answers])
    y = np.array([a.correct for a in answers])
    domains = np.array([a.item.domain for a in answers])
    logits = lodo_logits(x, y, domains)
    assert min(domain_auroc(logits, y, domains).values()) > 0.9
    before = np.stack([a.answer_rows[:2].astype(np.float32).mean(0) for a in answers])  # tokens without it
    assert np.median(list(domain_auroc(lodo_logits(before, y, domains), y, domains).values())) < 0.75


def test_study_prefers_the_exact_answer_tokens_and_certifies_selective_answers():
    answers, samples = _planted()
    study = study_answers(answers, samples, [0, 1], alpha=0.2, splits=50)
    s = study["signals"]
    assert s["probe_exact"]["lodo_median_spanned"] > 0.9 > s["probe_last"]["lodo_median_spanned"]
    assert study["best_probe"] in ("probe_exact", "se_probe_exact")
    assert s["probe_exact"]["lowo_median"] > 0.9 > s["probe_last"]["lowo_median"]  # left-out wordings too
    assert s["sample_agreement"]["lodo_median"] > 0.7 and s["logprob"]["lodo_median"] < 0.7
    assert study["selective"]["combined_all"]["certified"] > 0.9
    assert study["selective"]["combined_all"]["coverage"] > study["selective"]["logprob"]["coverage"]


def test_stored_answers_round_trip_without_pickle(tmp_path):
    answers, samples = _planted(n_per=5)
    save_answers(tmp_path / "answers", answers, samples, (12, 14))
    back, drawn, layers = load_answers(tmp_path / "answers")
    assert layers == (12, 14) and drawn == samples
    for a, b in zip(answers, back):
        assert (a.item, a.text, a.token_ids, a.correct, a.span) == (b.item, b.text, b.token_ids, b.correct, b.span)
        assert np.array_equal(a.answer_rows, b.answer_rows) and np.array_equal(a.token_logprobs, b.token_logprobs)


def test_calibrate_answers_refuses_bad_counts_and_reanalyses_stored_answers(tmp_path, capsys, monkeypatch):
    from guard.__main__ import main

    monkeypatch.setenv("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # main() sets it; restored after the test
    assert main(["calibrate-answers", "--out", str(tmp_path), "--samples", "0"]) == 2
    assert "--samples=0" in capsys.readouterr().err
    answers, samples = _planted()
    save_answers(tmp_path / "answers", answers, samples, (12, 14))
    assert main(["calibrate-answers", "--out", str(tmp_path), "--reuse"]) == 0
    assert "| sample_agreement |" in (tmp_path / "study.md").read_text()
    missing = tmp_path / "nothing"
    assert main(["calibrate-answers", "--out", str(missing), "--reuse"]) == 2
    assert "collect them again" in capsys.readouterr().err
