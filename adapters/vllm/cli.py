"""The engine's commands: ``guard model prepare``, ``guard probe stand-in``, ``guard generate``, ``guard selftest``.

Registered by the ``guard`` command through :func:`register` (see ``guard/__main__.py``); nothing
heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from guard import env
from guard.errors import GuardError

__all__ = ["register", "parse_layers"]


def register(sub: Any) -> None:
    """Add this layer's subcommands to the ``guard`` command's subparsers."""
    # stdout carries results (tables, JSON); vLLM's logs go to stderr, in this process and the engines it starts
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    model = sub.add_parser("model", help="manage the embedded default model")
    model_sub = model.add_subparsers(dest="action", required=True)
    prep = model_sub.add_parser("prepare", help="convert the embedded GGUF to a Hugging Face folder (once)")
    prep.add_argument("--cache-dir", default=None, help="cache directory (default $GUARD_HOME or ~/.cache/guard)")
    prep.set_defaults(handler=_prepare)

    probe = sub.add_parser("probe", help="probe artefacts")
    probe_sub = probe.add_subparsers(dest="action", required=True)
    stand = probe_sub.add_parser("stand-in", help="write a random stand-in probe (NOT calibrated)")
    stand.add_argument("--out", required=True, help="output path (writes OUT.safetensors and OUT.json)")
    stand.add_argument("--model", default="default")
    stand.add_argument("--layers", default="14", help="comma-separated decoder layers (default 14)")
    stand.set_defaults(handler=_stand_in)

    for name, text in (("generate", "guarded generation with per-token scores"),
                       ("selftest", "prove the capture works")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--model", default=None, help="'default', an HF folder or a hub id")
        p.add_argument("--probe", default=None, help="probe artefact (default: the probe shipped for the model)")
        p.add_argument("--eager", action="store_true", help="run the engine without torch.compile")
        p.set_defaults(handler=_generate if name == "generate" else _selftest)
        if name == "generate":
            p.add_argument("prompts", nargs="+", help="prompt text(s)")
            p.add_argument("--max-tokens", type=int, default=32)
            p.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")
            p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def parse_layers(raw: str) -> tuple[int, ...]:
    """``"12,14"`` -> ``(12, 14)``.

    Raises:
        GuardError: not comma-separated integers (names the value).
    """
    try:
        return tuple(int(x) for x in raw.split(","))
    except ValueError as exc:
        raise GuardError(f"--layers={raw!r} is invalid: expected comma-separated integers like 12,14") from exc


def _prepare(args: argparse.Namespace) -> int:
    from adapters.model_store import prepare_default_model

    print(prepare_default_model(args.cache_dir))
    return 0


def _stand_in(args: argparse.Namespace) -> int:
    from adapters.defaults import build_stand_in_probe
    from adapters.model_store import resolve_model

    print(build_stand_in_probe(resolve_model(args.model), args.out, parse_layers(args.layers)))
    return 0


def _engine(args: argparse.Namespace) -> Any:
    from adapters.defaults import default_probe
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig

    model = args.model or env.read("GUARD_MODEL") or "default"
    probe = args.probe or env.read("GUARD_PROBE") or default_probe(model)
    return GuardedLLM(GuardConfig.build(model=model, probe=probe, enforce_eager=args.eager or None, max_num_seqs=16))


def _generate(args: argparse.Namespace) -> int:
    from vllm import SamplingParams

    if args.max_tokens < 1:
        raise GuardError(f"--max-tokens={args.max_tokens} is invalid: expected a positive integer")
    with _engine(args) as llm:
        prompts = args.prompts
        if args.chat:
            prompts = [llm.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                         add_generation_prompt=True) for p in prompts]
        results = llm.generate(prompts, SamplingParams(max_tokens=args.max_tokens, temperature=0.0))
        probe = llm.probe
        report = [_token_report(llm, probe, prompt, res) for prompt, res in zip(args.prompts, results, strict=True)]
    if args.json:
        print(json.dumps({"probe": probe.manifest.model_dump(), "results": report}, indent=2))
        return 0
    m = probe.manifest
    print(f"probe: {m.kind} layers={list(m.layers)} labels={list(m.labels)} "
          f"(held-out AUROC {m.metrics.get('auroc_true_vs_false', float('nan')):.3f})" if m.metrics else
          f"probe: {m.kind} ({m.description}) layers={list(m.layers)} labels={list(m.labels)}")
    for item in report:
        print(f"\nprompt:     {item['prompt']!r}\ncompletion: {item['completion']!r}")
        print(f"  {'pos':>4}  {'token':<16} " + " ".join(f"p({x})" for x in m.labels))
        for row in item["token_scores"]:
            print(f"  {row['position']:>4}  {row['token']!r:<16} " + " ".join(f"{p:>7.3f}" for p in row["probs"]))
        verdict = item["verdict"]
        if verdict:
            labels = ", ".join(verdict["set"]) if verdict.get("set") is not None else "n/a"
            print(f"  verdict at the last token: {dict(zip(m.labels, verdict['probs'], strict=True))} "
                  f"conformal set: {{{labels}}}")
    return 0


def _token_report(llm: Any, probe: Any, prompt: str, res: Any) -> dict[str, Any]:
    """Per-token class probabilities of the answer (from the last prompt token on) and the final verdict."""
    import numpy as np

    from guard.shift import shift_of_columns

    n_prompt = len(res.prompt_token_ids)
    rows = []
    for pos, score in zip(res.scores.positions.tolist(), res.scores.scores, strict=True):
        if pos >= n_prompt - 1:  # the last prompt token, then every generated one that was fed back
            probs = probe.probabilities(score[None])[0]
            rows.append({"position": pos, "token": llm.tokenizer.decode([res.sequence[pos]]),
                         "scores": score.ravel().round(4).tolist(), "probs": probs.round(4).tolist()})
    verdict = None
    if rows:
        last = np.array(rows[-1]["probs"])
        sets = probe.prediction_sets(last[None]) if probe.manifest.conformal is not None else None
        verdict = {"probs": last.round(4).tolist(), "set": list(sets[0]) if sets else None}
        rule = probe.manifest.shift
        if rule is not None and res.shift_scores is not None:  # the shift head (guard.shift) at the same token
            shift = float(shift_of_columns(res.shift_scores[-1:])[0])
            verdict |= {"shift": round(shift, 4), "shifted": rule.shifted(shift)}
            if verdict["shifted"]:
                verdict["set"] = list(probe.labels)  # unlike the calibration domains: the guard cannot tell
    return {"prompt": prompt, "completion": res.text, "token_scores": rows, "verdict": verdict}


def _selftest(args: argparse.Namespace) -> int:
    with _engine(args) as llm:
        status = llm.worker_status()
    print(json.dumps({"selftest": "passed", "workers": status}, indent=2))
    return 0
