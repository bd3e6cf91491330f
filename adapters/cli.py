"""The ``guard`` command line (launched through ``guard/__main__.py``).

Subcommands::

    guard model prepare            convert the embedded default model once; print its folder
    guard probe stand-in --out P   write a random, clearly labelled stand-in probe
    guard generate PROMPT...       guarded generation with per-token scores
    guard selftest                 start a guarded engine and prove the capture works
    guard calibrate --out DIR      train + conformally calibrate a true/false/neither probe, with a report
    guard evaluate --probe P --statements FILE   probe quality on a labelled file, scored in the engine
    guard serve                    OpenAI-compatible server with verdicts in a `guard` field (docs/serving.md)
    guard proxy --upstream URL     the same API in front of a foreign OpenAI-compatible API; a local reader judges
    guard bench latency|quality|selective   the benchmark suite: JSON + PNG into benchmarks/results/
    guard steer build --out PATH   a truthful-direction steering vector from guard's statements
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from guard import env
from guard.errors import GuardError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``guard`` command."""
    parser = argparse.ArgumentParser(prog="guard", description="Inference-time hallucination guard for vLLM")
    sub = parser.add_subparsers(dest="command", required=True)

    model = sub.add_parser("model", help="manage the embedded default model")
    model_sub = model.add_subparsers(dest="action", required=True)
    prep = model_sub.add_parser("prepare", help="convert the embedded GGUF to a Hugging Face folder (once)")
    prep.add_argument("--cache-dir", default=None, help="cache directory (default $GUARD_HOME or ~/.cache/guard)")

    probe = sub.add_parser("probe", help="probe artefacts")
    probe_sub = probe.add_subparsers(dest="action", required=True)
    stand = probe_sub.add_parser("stand-in", help="write a random stand-in probe (NOT calibrated)")
    stand.add_argument("--out", required=True, help="output path (writes OUT.safetensors and OUT.json)")
    stand.add_argument("--model", default="default")
    stand.add_argument("--layers", default="14", help="comma-separated decoder layers (default 14)")

    for name, text in (("generate", "guarded generation with per-token scores"), ("selftest", "prove the capture works")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--model", default=None, help="'default', an HF folder or a hub id")
        p.add_argument("--probe", default=None, help="probe artefact (default: the probe shipped for the model)")
        p.add_argument("--eager", action="store_true", help="run the engine without torch.compile")
        if name == "generate":
            p.add_argument("prompts", nargs="+", help="prompt text(s)")
            p.add_argument("--max-tokens", type=int, default=32)
            p.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")
            p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    cal = sub.add_parser("calibrate", help="train and calibrate a true/false/neither probe for a model")
    cal.add_argument("--model", default="default", help="'default', an HF folder or a hub id")
    cal.add_argument("--out", required=True, help="output folder (probe.safetensors, probe.json, report.md, plots)")
    cal.add_argument("--family", default="logistic", help="probe family: logistic, mass-mean, mil or mlp")
    cal.add_argument("--layers", default=None, help="comma-separated layers to sweep (default: every second layer)")
    cal.add_argument("--alpha", type=float, default=0.1, help="conformal miscoverage per class (default 0.1)")
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--statements", default=None, help="your own statement,label CSV/JSONL (default: guard's own)")
    cal.add_argument("--negations", action="store_true", help="also train on negated statements")
    cal.add_argument("--all-facts", action="store_true", help="keep facts the model does not know (no likelihood test)")
    cal.add_argument("--gate-alpha", type=float, default=0.3,
                     help="tolerated error rate among answered questions for the pre-generation gate (default 0.3)")
    cal.add_argument("--delta", type=float, default=0.1, help="failure probability of the selective guarantee (default 0.1)")
    cal.add_argument("--json", action="store_true", help="print machine-readable JSON")

    ev = sub.add_parser("evaluate", help="evaluate a probe on a labelled statements file (scored in the engine)")
    ev.add_argument("--probe", required=True)
    ev.add_argument("--statements", required=True, help="statement,label CSV or JSONL")
    ev.add_argument("--model", default="default")
    ev.add_argument("--json", action="store_true", help="print machine-readable JSON")
    qa = sub.add_parser("evaluate-qa", help="answer QA items through the engine, grade them, report selective answering")
    qa.add_argument("--probe", default=None, help="answer probe (default: the probe shipped for the model)")
    qa.add_argument("--qa", default=None, help="question,answers CSV or JSONL (default: guard's own QA items)")
    qa.add_argument("--alpha", type=float, default=0.1, help="tolerated error rate among answered questions (default 0.1)")
    qa.add_argument("--delta", type=float, default=0.1, help="failure probability of the guarantee (default 0.1)")
    qa.add_argument("--gate", default=None, help="pre-generation gate artefact (default: the gate shipped for the model)")
    qa.add_argument("--no-gate", action="store_true", help="evaluate without a pre-generation gate")
    qa.add_argument("--splits", type=int, default=200, help="random calibration/test halvings (default 200)")
    qa.add_argument("--model", default="default")
    qa.add_argument("--json", action="store_true", help="print machine-readable JSON")
    serve = sub.add_parser("serve", help="OpenAI-compatible server with verdicts in a `guard` field (docs/serving.md)")
    serve.add_argument("--model", default=None, help="'default', an HF folder or a hub id")
    serve.add_argument("--probe", default=None, help="probe artefact (default: the probe shipped for the model)")
    serve.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="listen port (default 8000)")
    serve.add_argument("--config", default=None, help="YAML settings file (see server/settings.py)")
    serve.add_argument("--mode", default=None, help="default guard mode: flag (default), abstain or pass")
    serve.add_argument("--gate", default=None, help="pre-generation gate (default: the gate shipped with the probe)")
    serve.add_argument("--no-gate", action="store_true", help="serve without a pre-generation gate")
    serve.add_argument("--steering", default=None, help="steering vector for mode 'steer' (default: the one shipped "
                       "for the model, if any)")
    serve.add_argument("--steer-alpha", type=float, default=None, help="default steering strength (default: the "
                       "vector's)")
    serve.add_argument("--eager", action="store_true", help="run the engine without torch.compile")
    _hardening_flags(serve)
    proxy = sub.add_parser("proxy", help="guard fields in front of any OpenAI-compatible API, read by a local model")
    proxy.add_argument("--upstream", default=None, help="the foreign API's base URL, e.g. https://api.example.com/v1")
    proxy.add_argument("--model", default=None, help="reader model: 'default', an HF folder or a hub id")
    proxy.add_argument("--probe", default=None, help="probe artefact (default: the probe shipped for the reader)")
    proxy.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    proxy.add_argument("--port", type=int, default=None, help="listen port (default 8000)")
    proxy.add_argument("--config", default=None, help="YAML settings file (see server/settings.py)")
    proxy.add_argument("--mode", default=None, help="default guard mode: flag (default), abstain or pass")
    proxy.add_argument("--eager", action="store_true", help="run the reader engine without torch.compile")
    proxy.add_argument("--upstream-timeout", type=float, default=None, help="seconds per read from the upstream")
    proxy.add_argument("--upstream-guarded", action="store_true", default=None,
                       help="the upstream is guard serve: pass the guard object on (mode 'steer' then works)")
    _hardening_flags(proxy)
    from benchmarks.cli import add_bench_parser  # guard bench latency|quality|selective (benchmarks/README.md)

    add_bench_parser(sub)
    from calibration.steer_command import add_steer_parser  # guard steer build

    add_steer_parser(sub)
    return parser


def _hardening_flags(parser: argparse.ArgumentParser) -> None:
    """guard serve's and guard proxy's failure policy, content logging and shutdown deadline (docs/operations.md)."""
    parser.add_argument("--on-guard-failure", default=None, choices=("fail_open", "fail_closed"),
                        help="when the guard cannot judge an answer: pass it marked unverified (fail_open, default) "
                             "or abstain (fail_closed)")
    parser.add_argument("--log-content", action="store_true", default=None,
                        help="log prompts and completions (off by default; the log then holds user data)")
    parser.add_argument("--shutdown-timeout", type=float, default=None, metavar="SECONDS",
                        help="on SIGTERM, let running requests finish for at most this long, then abort the rest "
                             "(default 5)")


def _layers(raw: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in raw.split(","))
    except ValueError as exc:
        raise GuardError(f"--layers={raw!r} is invalid: expected comma-separated integers like 12,14") from exc


def _calibration_job(args: argparse.Namespace) -> int:
    from calibration import commands

    if args.command == "calibrate":
        summary = commands.run_calibrate(args.model, args.out, _layers(args.layers) if args.layers else None,
                                         args.family, args.alpha, args.seed, args.statements,
                                         known_only=not args.all_facts, negations=args.negations,
                                         gate_alpha=args.gate_alpha, delta=args.delta)
    elif args.command == "evaluate-qa":
        if args.splits < 1:
            raise GuardError(f"--splits={args.splits} is invalid: expected a positive integer")
        probe = args.probe or _default_probe(args.model)
        gate = None if args.no_gate else args.gate or _default_gate(args.model, probe)
        summary = commands.run_evaluate_qa(probe, args.qa, args.alpha, args.delta, args.model, gate, args.splits)
        print(commands.dumps(summary) if args.json else commands.format_qa_table(summary))
        return 0
    else:
        summary = commands.run_evaluate(args.probe, args.statements, args.model)
    print(commands.dumps(summary) if args.json else commands.format_table(summary))
    return 0


def _default_probe(model: str) -> str:
    """The probe shipped for this model; else a stand-in, said loudly."""
    from adapters.model_store import resolve_model
    from guard.model_spec import ModelSpec
    from guard.shipped import shipped_probe

    found = shipped_probe(ModelSpec.from_folder(resolve_model(model)).fingerprint)
    if found is not None:
        return str(found)
    print(f"guard: no calibrated probe ships for model {model!r}; using a RANDOM stand-in probe. "
          f"Run `guard calibrate --model {model} --out DIR` and pass --probe DIR/probe.safetensors", file=sys.stderr)
    return _stand_in_probe(model)


def _default_steering(model: str) -> str | None:
    """The steering vector shipped for this model, if any."""
    from adapters.model_store import resolve_model
    from guard.model_spec import ModelSpec
    from guard.shipped import shipped_steering

    found = shipped_steering(ModelSpec.from_folder(resolve_model(model)).fingerprint)
    return str(found) if found is not None else None


def _default_gate(model: str, probe: str) -> str | None:
    """The gate shipped for this model when ``probe`` is the shipped probe (a gate reads its probe's layers)."""
    from adapters.model_store import resolve_model
    from guard.model_spec import ModelSpec
    from guard.shipped import shipped_probe

    fingerprint = ModelSpec.from_folder(resolve_model(model)).fingerprint
    shipped = shipped_probe(fingerprint)
    if shipped is None or Path(probe).resolve() != shipped.resolve():
        return None
    gate = shipped_probe(fingerprint, gate=True)
    return str(gate) if gate is not None else None


def _stand_in_probe(model: str) -> str:
    from adapters.model_store import resolve_model
    from calibration.stand_in import build_stand_in_probe

    path = Path(env.cache_home()) / "probes" / "stand-in-layer14"
    if not path.with_suffix(".json").exists():
        build_stand_in_probe(resolve_model(model), path)
    return str(path.with_suffix(".safetensors"))


def _engine(args: argparse.Namespace) -> Any:
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig

    model = args.model or env.read("GUARD_MODEL") or "default"
    probe = args.probe or env.read("GUARD_PROBE") or _default_probe(model)
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
        report = [_token_report(llm, probe, prompt, res) for prompt, res in zip(args.prompts, results)]
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
            print(f"  verdict at the last token: {dict(zip(m.labels, verdict['probs']))} conformal set: {{{labels}}}")
    return 0


def _token_report(llm: Any, probe: Any, prompt: str, res: Any) -> dict[str, Any]:
    """Per-token class probabilities of the answer (from the last prompt token on) and the final verdict."""
    n_prompt = len(res.prompt_token_ids)
    rows = []
    for pos, score in zip(res.scores.positions.tolist(), res.scores.scores):
        if pos >= n_prompt - 1:  # the last prompt token, then every generated one that was fed back
            probs = probe.probabilities(score[None])[0]
            rows.append({"position": pos, "token": llm.tokenizer.decode([res.sequence[pos]]),
                         "scores": score.ravel().round(4).tolist(), "probs": probs.round(4).tolist()})
    verdict = None
    if rows:
        last = np.array(rows[-1]["probs"])
        sets = probe.prediction_sets(last[None]) if probe.manifest.conformal is not None else None
        verdict = {"probs": last.round(4).tolist(), "set": list(sets[0]) if sets else None}
    return {"prompt": prompt, "completion": res.text, "token_scores": rows, "verdict": verdict}


def _selftest(args: argparse.Namespace) -> int:
    with _engine(args) as llm:
        status = llm.worker_status()
    print(json.dumps({"selftest": "passed", "workers": status}, indent=2))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from server import ServeSettings, run

    settings = ServeSettings.build(config=args.config, model=args.model, probe=args.probe, host=args.host,
                                   port=args.port, mode=args.mode, enforce_eager=args.eager or None, gate=args.gate,
                                   use_gate=False if args.no_gate else None, on_guard_failure=args.on_guard_failure,
                                   log_content=args.log_content, steering=args.steering, steer_alpha=args.steer_alpha,
                                   shutdown_timeout=args.shutdown_timeout)
    if settings.probe is None:
        settings = settings.model_copy(update={"probe": _default_probe(settings.model)})
    if settings.use_gate and settings.gate is None:
        settings = settings.model_copy(update={"gate": _default_gate(settings.model, settings.probe)})
    if settings.steering is None:
        settings = settings.model_copy(update={"steering": _default_steering(settings.model)})
    try:
        run(settings)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the upstream has been stopped
        pass
    return 0


def _proxy(args: argparse.Namespace) -> int:
    from server import ProxySettings, run_proxy

    settings = ProxySettings.build(config=args.config, upstream=args.upstream, model=args.model, probe=args.probe,
                                   host=args.host, port=args.port, mode=args.mode, enforce_eager=args.eager or None,
                                   upstream_timeout=args.upstream_timeout, on_guard_failure=args.on_guard_failure,
                                   log_content=args.log_content, upstream_guarded=args.upstream_guarded,
                                   shutdown_timeout=args.shutdown_timeout)
    if settings.probe is None:
        settings = settings.model_copy(update={"probe": _default_probe(settings.model)})
    try:
        run_proxy(settings)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the reader has been stopped
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for guard errors, with the message on stderr)."""
    args = build_parser().parse_args(argv)
    # stdout carries results (tables, JSON); vLLM's logs go to stderr.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    try:
        if args.command == "model":
            from adapters.model_store import prepare_default_model

            print(prepare_default_model(args.cache_dir))
            return 0
        if args.command == "probe":
            from adapters.model_store import resolve_model
            from calibration.stand_in import build_stand_in_probe

            print(build_stand_in_probe(resolve_model(args.model), args.out, _layers(args.layers)))
            return 0
        if args.command == "serve":
            return _serve(args)
        if args.command == "proxy":
            return _proxy(args)
        if args.command == "bench":
            from benchmarks.cli import run_bench

            return run_bench(args, argv)
        if args.command == "steer":
            from calibration.steer_command import run_steer_cli

            return run_steer_cli(args)
        if args.command in ("calibrate", "evaluate", "evaluate-qa"):
            return _calibration_job(args)
        return _generate(args) if args.command == "generate" else _selftest(args)
    except GuardError as exc:
        print(f"guard: error: {exc}", file=sys.stderr)
        return 2
