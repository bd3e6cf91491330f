"""``guard steer build``: make a steering vector for a model from guard's own statements.

The statements' residual streams come from the vLLM capture (as ``guard calibrate`` collects them):
each true and false affirmative statement's last token at the chosen layers. By default only facts
the model knows are used (the likelihood test of :mod:`calibration.knowledge`), and only one domain
with ``--domain``. The direction is the normalised mean difference of true and false statements
(``--source mean-difference``) or a linear probe's own ``true - false`` read-out direction at its
layers (``--source probe``), scaled alike (see :mod:`calibration.steering`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calibration.progress import add_quiet_option, quiet
from calibration.statements import Statement, generate_statements
from guard.errors import ConfigError, GuardError
from guard.evaluation import auroc

__all__ = ["SOURCES", "DEFAULT_STEER_LAYERS", "steering_statements", "run_steer_build", "add_steer_parser",
           "run_steer_cli"]

SOURCES = ("mean-difference", "probe")
#: steered layers of a mean-difference vector when none are given: just before the default probe's layers
DEFAULT_STEER_LAYERS: tuple[int, ...] = (12,)


def steering_statements(statements: Sequence[Statement], domain: str | None = None) -> list[Statement]:
    """The true and false plain affirmative statements (of ``domain`` only, when given): no negations, questions
    or compounds, whose truth the difference of means would read inverted or mixed.

    Raises:
        ConfigError: ``domain`` names no domain of the statements (lists the known ones).
    """
    pool = [s for s in statements if s.label in ("true", "false") and not s.negated and s.form == "plain"]
    if domain is None:
        return pool
    known = sorted({s.domain for s in pool})
    chosen = [s for s in pool if s.domain == domain]
    if not chosen:
        raise ConfigError(f"--domain={domain!r} is not a domain of guard's statements; expected one of "
                          f"{', '.join(known)}")
    return chosen


def run_steer_build(out: str | Path, model: str = "default", layers: Sequence[int] | None = None,
                    source: str = "mean-difference", probe: str | None = None, domain: str | None = None,
                    default_alpha: float | None = None, known_only: bool = True, seed: int = 0) -> dict[str, Any]:
    """Build a steering vector for ``model`` and write ``OUT.{safetensors,json}``.

    Args:
        layers: steered layers (mean-difference; default :data:`DEFAULT_STEER_LAYERS`); with
            ``source="probe"`` they must be the probe's layers (default).
        probe: the probe of ``source="probe"`` (default: the probe shipped for the model).
        domain: use statements of this domain only (``capital``, ``element``, ...).
        default_alpha: recorded in the manifest as the strength of requests that give none.
        known_only: keep only facts the model knows (likelihood test).

    Returns:
        A summary: path, layers, statement counts, vector norms, and the AUROC with which the
        projection on the direction separates the true from the false statements.

    Raises:
        ConfigError: an unknown source or domain, no probe for ``source="probe"``, or layers that
            disagree with the probe's.
    """
    from adapters.model_store import resolve_model
    from adapters.vllm.engine import GuardedLLM
    from calibration.activations import collect_vllm
    from calibration.knowledge import known_facts
    from calibration.steering import mean_difference, probe_difference, residual_norm
    from guard.config import GuardConfig
    from guard.model_spec import ModelSpec
    from guard.probe import Probe
    from guard.shipped import shipped_probe
    from guard.steering import SteeringVector

    if source not in SOURCES:
        raise ConfigError(f"--source={source!r} is invalid: expected one of {', '.join(SOURCES)}")
    spec = ModelSpec.from_folder(resolve_model(model))
    reader = None
    if source == "probe":
        found = probe or shipped_probe(spec.fingerprint)
        if found is None:
            raise ConfigError(f"--source probe needs a probe and none ships for model {model!r}; pass --probe P")
        reader = Probe.load(found)
        reader.check_model(spec, model)
        if layers and tuple(layers) != reader.layers:
            raise ConfigError(f"--layers={','.join(map(str, layers))} disagrees with the probe's layers "
                              f"{list(reader.layers)}; a probe direction exists only there: drop --layers")
    steer_layers = reader.layers if reader is not None else tuple(layers or DEFAULT_STEER_LAYERS)
    chosen = steering_statements(generate_statements(seed), domain)
    config = GuardConfig.build(model=model, probe=None, layers=steer_layers, capture_hidden=True, enforce_eager=True,
                               max_model_len=512)
    with GuardedLLM(config) as llm:
        unknown: set[str] = set()
        if known_only:
            _, unknown = known_facts(llm, chosen)
            chosen = [s for s in chosen if s.fact not in unknown]
        features = collect_vllm(llm, [s.text for s in chosen], spec.fingerprint)["last"]  # (n, L, H)
    labels = np.array([0 if s.label == "true" else 1 for s in chosen])
    vectors = (mean_difference(features, labels, normalize=True) if reader is None
               else probe_difference(reader, features))
    what = f"{len(chosen)} statements" + (f" of domain {domain!r}" if domain else "") + \
        (" about facts the model knows" if known_only else "")
    origin = ("mean(true) - mean(false)" if reader is None else
              f"(w_true - w_false) / scale of probe {reader.manifest.kind!r} at its layers")
    sv = SteeringVector.from_vectors(
        vectors, steer_layers, spec, kind=source if domain is None else f"{source}:{domain}", model_id=model,
        description=f"{origin}, last token of {what}; unit directions scaled to the median residual norm",
        default_alpha=default_alpha, residual_norm=residual_norm(features))
    path = sv.save(out)
    projection = np.einsum("nlh,lh->nl", features.astype(np.float64), vectors.astype(np.float64))  # (n, L)
    return {"path": str(path), "source": source, "domain": domain, "layers": list(steer_layers),
            "statements": len(chosen), "true": int((labels == 0).sum()), "false": int((labels == 1).sum()),
            "facts_dropped_unknown": len(unknown), "norms": list(sv.manifest.norms), "default_alpha": default_alpha,
            "max_alpha": sv.max_alpha,
            "separation_auroc": [auroc(projection[:, i], labels == 0) for i in range(len(steer_layers))]}


def add_steer_parser(sub: Any, handler: Any = None) -> None:
    """Add ``steer build`` to the ``guard`` command's subparsers (``handler``: what runs it)."""
    steer = sub.add_parser("steer", help="steering vectors: build one from guard's statements")
    steer_sub = steer.add_subparsers(dest="steer", required=True)
    b = steer_sub.add_parser("build", help="build a truthful-direction steering vector (safetensors + JSON)")
    b.add_argument("--out", required=True, help="destination (writes OUT.safetensors and OUT.json)")
    b.add_argument("--model", default="default", help="'default', an HF folder or a hub id")
    b.add_argument("--layers", default=None, help="comma-separated steered layers (default 12; --source probe: "
                                                  "the probe's)")
    b.add_argument("--source", default="mean-difference", choices=SOURCES, help="how directions are made")
    b.add_argument("--probe", default=None, help="probe of --source probe (default: the probe shipped for the model)")
    b.add_argument("--domain", default=None, help="statements of one domain only (capital, element, date, ...)")
    b.add_argument("--default-alpha", type=float, default=None, help="strength of requests that give none")
    b.add_argument("--all-facts", action="store_true", help="keep facts the model does not know")
    b.add_argument("--json", action="store_true", help="print machine-readable JSON")
    add_quiet_option(b)
    b.set_defaults(handler=handler or run_steer_cli)


def run_steer_cli(args: argparse.Namespace) -> int:
    """Run ``guard steer build`` from parsed arguments; prints a summary, returns the exit status."""
    layers = None
    if args.layers:
        try:
            layers = tuple(int(x) for x in args.layers.split(","))
        except ValueError as exc:
            raise GuardError(f"--layers={args.layers!r} is invalid: expected comma-separated integers like 12,14") \
                from exc
    with quiet(args.quiet):
        summary = run_steer_build(args.out, args.model, layers, args.source, args.probe, args.domain,
                                  args.default_alpha, known_only=not args.all_facts)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"steering vector: {summary['path']}\n  source {summary['source']} layers {summary['layers']} "
              f"from {summary['statements']} statements ({summary['true']} true, {summary['false']} false)\n"
              f"  norms {[round(n, 2) for n in summary['norms']]}; true/false separation AUROC of the projection "
              f"{[round(a, 3) for a in summary['separation_auroc']]}; default alpha {summary['default_alpha']}")
    return 0
