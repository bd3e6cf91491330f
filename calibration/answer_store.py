"""On-policy answers on disk: rows in one ``.safetensors`` (float16), everything else in a ``.json`` beside it.

Collecting answers and samples through the engine takes about 35 minutes on two CPU cores for guard's
2,598 questions, so ``guard calibrate-answers`` keeps them (``answers.safetensors`` + ``answers.json``) and
re-analyses them without the engine. No pickle: the arrays are plain numbers, the rest plain JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from calibration.onpolicy import OnPolicyAnswer
from calibration.statements import QAItem
from guard.errors import DataError
from guard.tensorfile import load_tensors, save_tensors

__all__ = ["save_answers", "load_answers"]


def _offsets(lengths: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def save_answers(path: str | Path, answers: Sequence[OnPolicyAnswer], samples: Sequence[Sequence[str]],
                 layers: Sequence[int]) -> Path:
    """Write ``PATH.safetensors`` and ``PATH.json``; returns the ``.json`` path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [a.answer_rows for a in answers]
    prompts = np.stack([a.prompt_row for a in answers]).astype(np.float16)
    save_tensors(path.with_suffix(".safetensors"), {
        "prompt_rows": prompts,
        "answer_rows": np.concatenate(rows).astype(np.float16) if sum(map(len, rows))
        else np.zeros((0, *prompts.shape[1:]), np.float16),
        "row_offsets": _offsets([len(r) for r in rows]),
        "token_logprobs": np.concatenate([a.token_logprobs for a in answers]).astype(np.float32),
        "logprob_offsets": _offsets([len(a.token_logprobs) for a in answers])})
    meta = {"layers": list(layers), "answers": [
        {"question": a.item.question, "answers": list(a.item.answers), "domain": a.item.domain, "fact": a.item.fact,
         "template": a.item.template, "distractors": list(a.item.distractors), "text": a.text,
         "token_ids": list(a.token_ids), "correct": a.correct, "span": list(a.span) if a.span else None,
         "samples": list(s)} for a, s in zip(answers, samples)]}
    out = path.with_suffix(".json")
    out.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    return out


def load_answers(path: str | Path) -> tuple[list[OnPolicyAnswer], list[list[str]], tuple[int, ...]]:
    """Read what :func:`save_answers` wrote: answers, samples per answer, and the layers of the rows.

    Raises:
        DataError: a file is missing or the two disagree.
    """
    path = Path(path)
    try:
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        arrays, _ = load_tensors(path.with_suffix(".safetensors"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read stored answers {str(path)!r} (.json and .safetensors): {err}; collect them "
                        "again with guard calibrate-answers") from err
    prompts, rows, offsets = arrays["prompt_rows"], arrays["answer_rows"], arrays["row_offsets"]
    lps, lp_offsets = arrays["token_logprobs"], arrays["logprob_offsets"]
    entries = meta["answers"]
    if len(entries) != len(prompts) or len(offsets) != len(entries) + 1:
        raise DataError(f"stored answers {str(path)!r}: {len(entries)} entries but {len(prompts)} rows; "
                        "the .json and .safetensors are from different runs")
    answers, samples = [], []
    for i, e in enumerate(entries):
        item = QAItem(e["question"], tuple(e["answers"]), e["domain"], e["fact"], e["template"],
                      tuple(e["distractors"]))
        answers.append(OnPolicyAnswer(item, e["text"], tuple(e["token_ids"]), bool(e["correct"]),
                                      lps[lp_offsets[i] : lp_offsets[i + 1]], prompts[i],
                                      rows[offsets[i] : offsets[i + 1]], tuple(e["span"]) if e["span"] else None))
        samples.append(list(e["samples"]))
    return answers, samples, tuple(meta["layers"])
