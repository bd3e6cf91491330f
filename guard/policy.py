"""The guard's decision: the contract of a guarded response, and :class:`StreamGuard`, one per choice.

Contract (what a guarded response promises):

* **Sentences.** The generated text is split by :class:`~guard.sentences.SentenceSplitter`.
* **Pooling and conformal sets** as :mod:`guard.verdicts` defines them (per-label Mondrian p-values).
* **Flag.** A sentence is *flagged* when "true" is not in its set. Finite-sample meaning: among
  sentences that are in fact true, at most alpha are flagged on average, provided they are
  exchangeable with the probe's calibration statements. Verdicts: ``supported`` (the set is exactly
  {"true"}), ``flagged``, ``uncertain`` (otherwise). A sentence none of whose tokens has a score is
  ``unscored`` and is never flagged. With a probe's shift head (:mod:`guard.shift`), a sentence too
  unlike the calibration domains is *shifted*: its set holds every label, so it is ``uncertain``
  (never flagged nor supported: the guard cannot tell).
* **Decision.** ``pass`` when nothing is flagged or the mode is "pass"; ``flag`` in mode "flag"
  with at least one flagged sentence (the text is unchanged); ``abstain`` in mode "abstain" with a
  flagged sentence, or when the pre-generation gate said so (modes "flag" and "abstain"); ``steer``
  in mode "steer" once the guard asked for steering (a flagged sentence, or the gate).

Streaming (one :class:`StreamGuard` per choice, used by streaming and non-streaming paths alike):
the score of generated token ``p`` arrives only when ``p`` is fed back (the next engine step) and
the last generated token never gets one, so text and scores arrive separately. A sentence is
decided once it is closed and all its tokens are scored, or at :meth:`StreamGuard.finish`. In modes
"flag" and "pass" text is emitted as it arrives. In mode "abstain" text is held until its sentence
is decided and emitted only if it is not flagged; at the first flagged sentence the guard emits the
abstain message and stops: sentences already emitted stay, and nothing unverified is ever sent. With the
answer check (``whole_answer``) every sentence is held until the whole answer is judged
(:meth:`StreamGuard.judge_answer`, then :meth:`StreamGuard.finish`): the answer goes out whole or not at all.

Mode "steer" holds text like "abstain", per token: once a sentence is decided, the text of every
token before the next sentence's first token is emitted. At the first flagged sentence the guard
stops and asks for steering (``GuardEvent.steer``); the caller starts a steered generation, calls
:meth:`StreamGuard.resume` and feeds it. ``continue``: the tokens before the flagged sentence's
first token are kept (the text emitted, plus whitespace) and the steered tokens follow them, from
that position on; the flagged sentence is never sent. ``regenerate``: nothing is emitted until the
whole answer is decided; at a flagged sentence it is discarded and a fresh, steered answer follows
from the first generated position. The gate asks for steering from the first token. After
:meth:`resume` the guard works as in mode "flag": a choice is steered at most once. ``always``
steers every token from the start, unconditionally, and reports like mode "flag".

Layout: :class:`StreamGuard` is the per-choice façade: it checks the request's options and picks the
choice's mode once. One :class:`~guard.policy_sentences.SentencePolicy` holds the choice's state and
the rules every mode shares (sentences, pooling, deciding in order, releasing scores with their
text); the mode, a small strategy (:mod:`guard.policy_modes`: pass, flag, abstain;
:mod:`guard.policy_steer`: steer), says what a token's text and a decided sentence do;
:func:`guard.policy_resume.resume` cuts the state back when steering starts. The rule that turns
pooled scores into a verdict is :class:`~guard.verdicts.VerdictRule`. Nothing here times itself:
callers time the calls they make.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from guard.errors import AdapterError, RequestOptionError
from guard.options import DEFAULT_ABSTAIN_MESSAGE, GuardOptions, parse_guard_options
from guard.outbox import NOTHING
from guard.policy_modes import Abstain, AbstainWhole, Flag, Mode, Pass
from guard.policy_resume import resume
from guard.policy_sentences import SentencePolicy
from guard.policy_steer import Always, SteerContinue, SteerRegenerate
from guard.splitters import splitter_factory
from guard.verdicts import (
    GuardEvent,
    GuardSummary,
    SteerPoint,
    TokenScore,
    VerdictRule,
    response_decision,
)

__all__ = ["DEFAULT_ABSTAIN_MESSAGE", "GuardOptions", "parse_guard_options", "response_decision", "TokenScore",
           "GuardEvent", "StreamGuard"]


class StreamGuard:
    """One choice's guard: feed text and scores as they arrive, emit what is safe to send.

    Feed every generated token's text in order with :meth:`add_text` or :meth:`add_texts` (tokens with
    empty text, such as an end-of-sequence token, too: they carry the previous token's score forward),
    scores with :meth:`add_probs`, :meth:`add_scores` or :meth:`add_rows` (any order relative to the
    text; positions of generated tokens only), then call :meth:`finish`. A sentence with no scored token at all is
    ``unscored`` and never flagged. A score that never arrives (only the last token's, in vLLM) holds
    its sentence's decision, and in the holding modes its text, until :meth:`finish`. Every call
    returns a :class:`GuardEvent`; while the guard is stopped (it abstained, or waits for
    :meth:`resume` after asking to steer), calls return empty events. Work per token is O(1)
    except at sentence decisions.

    Args:
        rule: the probe's verdict rule (build once per probe with :meth:`VerdictRule.from_probe`).
        options: the request's options.
        steer_strength: the steering strength mode "steer" reports (the caller resolves
            ``options.steer_alpha`` against its steering vector's default).
        whole_answer: in mode "abstain", hold all text until :meth:`judge_answer` (the answer check,
            :mod:`guard.answer_check`) and :meth:`finish`; other modes ignore it.

    Raises:
        RequestOptionError: ``options.alpha`` cannot be served by this probe (param ``guard.alpha``),
            or mode "steer" without a ``steer_strength``.

    Example:
        >>> from guard.conformal import MondrianConformal
        >>> cal = [[i / 20 for i in range(1, 20)]] * 2
        >>> rule = VerdictRule(("true", "false"), "last", MondrianConformal.from_scores(0.1, cal))
        >>> g = StreamGuard(rule, GuardOptions(mode="abstain"))
        >>> g.add_text(7, "Paris is in France.").text, g.add_text(8, "").text   # held until decided
        ('', '')
        >>> g.add_probs(7, np.array([0.95, 0.05])).text   # the sentence is not closed yet
        ''
        >>> g.finish().text, g.summary().decision
        ('Paris is in France.', 'pass')
    """

    def __init__(self, rule: VerdictRule, options: GuardOptions | None = None,
                 steer_strength: float | None = None, whole_answer: bool = False) -> None:
        self.rule, self.options = rule, options or GuardOptions()
        self.alpha = self.options.alpha if self.options.alpha is not None else rule.alpha
        if not rule.serves(self.alpha):
            raise RequestOptionError(
                f"guard.alpha={self.alpha} cannot be served: probe {rule.name!r} was calibrated at "
                f"alpha={rule.alpha} and stores no calibration scores; omit guard.alpha (or use {rule.alpha}), "
                "or re-run `guard calibrate`",
                param="guard.alpha")
        mode = AbstainWhole() if whole_answer and self.options.mode == "abstain" else _mode_for(
            self.options, self.alpha, steer_strength)
        self.steer_strength = steer_strength
        self._policy = SentencePolicy(rule, self.alpha, self.options.message, mode,
                                      splitter_factory(self.options.split))

    @property
    def stopped(self) -> bool:
        """Whether the server should stop generating this choice: it abstained, or waits to be steered."""
        return self._policy.stopped

    @property
    def steered(self) -> SteerPoint | None:
        """Where and how this choice was (asked to be) steered, if it was."""
        return self._policy.steered

    def add_text(self, position: int, text: str) -> GuardEvent:
        """Add the text of generated token ``position`` (strictly increasing, every token once).

        Raises:
            AdapterError: positions out of order, or text after :meth:`finish`.
        """
        return self.add_texts((position,), (text,))

    def add_texts(self, positions: Sequence[int], texts: Sequence[str]) -> GuardEvent:
        """:meth:`add_text` of several tokens in order, with one event for all (their events joined).

        Raises:
            AdapterError: as :meth:`add_text`.
        """
        policy = self._policy
        if policy.finished:
            raise AdapterError(f"text for position {positions[0]} arrived after finish(); feed all tokens first")
        policy.mode.add_texts(policy, positions, texts)
        return policy.out.take()

    def add_probs(self, position: int, probs: np.ndarray) -> GuardEvent:
        """Add token ``position``'s class probabilities ``(k,)`` in the probe's label order.

        Raises:
            AdapterError: wrong shape, non-finite values, a duplicate position, or a ``max``-pooling
                probe (which needs :meth:`add_scores`).
        """
        if self.rule.pooling == "max":
            raise AdapterError(f"probe {self.rule.name!r} pools by 'max' over raw per-layer scores; feed them with "
                               "add_scores(position, scores) of shape (layers, labels), not probabilities")
        if self.rule.shift is not None:
            raise AdapterError(f"probe {self.rule.name!r} has a shift head: feed raw rows with add_scores(position, "
                               f"scores) of shape (layers, {self.rule.columns}) (labels, then shift columns), not "
                               "probabilities")
        probs = np.asarray(probs, np.float64)[None]
        self.rule.check_values([position], probs, (len(self.rule.labels),), "probs")
        return self._policy.store([position], [tuple(probs[0].tolist())], None)

    def add_scores(self, position: int, scores: np.ndarray) -> GuardEvent:
        """Add token ``position``'s raw probe scores ``(layers, k)`` (one row of ``TokenScores.scores``).

        Raises:
            AdapterError: wrong shape, non-finite values or a duplicate position.
        """
        return self.add_rows([position], np.asarray(scores)[None])

    def add_rows(self, positions: Sequence[int], scores: np.ndarray) -> GuardEvent:
        """Add the raw probe scores ``(n, layers, k)`` of ``n`` positions at once (what one pull delivered):
        one softmax for all rows, one decision pass. Rows of a probe with a shift head may carry its ``d``
        shift columns after the labels' (``(n, layers, k + d)``).

        Raises:
            AdapterError: wrong shape, non-finite values or a duplicate position.
        """
        scores = np.asarray(scores)
        k = len(self.rule.labels)
        shifts = self.rule.shift_columns(positions, scores) if scores.ndim == 3 else None
        labels = scores[..., :k] if shifts is not None else scores
        probs = self.rule.row_probabilities(positions, labels)
        return self._policy.store(positions, probs,
                                  np.asarray(labels, np.float64) if self.rule.pooling == "max" else None, shifts)

    def finish(self) -> GuardEvent:
        """The stream ended: close the last sentence and decide every closed one with the scores there are."""
        policy = self._policy
        if policy.finished or policy.stopped:
            return NOTHING
        policy.mode.finish(policy)
        return policy.out.take()

    def gate_abstain(self, reason: str = "") -> GuardEvent:
        """The pre-generation gate says no: call before any text. Abstains (modes "flag" and "abstain"), asks
        for steering from the first generated token (mode "steer"), or is ignored (mode "pass", and
        ``steer_how="always"``, which steers from the first token anyway)."""
        policy = self._policy
        if policy.stopped or not policy.mode.uses_gate:
            return NOTHING
        policy.mode.gate(policy, reason)
        return policy.out.take()

    def judge_answer(self, answer: bool, reason: str = "", alpha: float | None = None) -> GuardEvent:
        """The answer check's decision on the complete answer: call after the last scores, before :meth:`finish`.

        Abstains (kind ``answer``, reporting the check's ``alpha``) when ``answer`` is false; the held text goes
        out at :meth:`finish` otherwise. Ignored unless the guard holds the whole answer (mode "abstain" with
        ``whole_answer``).
        """
        policy = self._policy
        if isinstance(policy.mode, AbstainWhole) and not policy.stopped:
            policy.mode.answer(policy, answer, reason, policy.alpha if alpha is None else alpha)
        return policy.out.take()

    def fail_closed(self, reason: str = "") -> GuardEvent:
        """The guard cannot judge the answer (``on_guard_failure: fail_closed``): abstain, kind ``guard_failure``
        (every mode but "pass")."""
        policy = self._policy
        if not policy.stopped:
            policy.mode.fail_closed(policy, reason)
        return policy.out.take()

    def resume(self) -> GuardEvent:
        """Steering has started: drop what it replaces and go on as in mode "flag" (:func:`guard.policy_resume.resume`).

        Then feed the steered tokens and scores: from :attr:`SteerPoint.position` on (``continue``),
        or from the first generated position (``regenerate``, the gate); scores of earlier positions
        are ignored. Returns the kept text not yet emitted (``continue``: whitespace at most).

        Raises:
            AdapterError: the guard did not ask to steer, or already resumed.
        """
        resume(self._policy)
        return self._policy.out.take()

    def summary(self) -> GuardSummary:
        """The response-level verdict so far (final after :meth:`finish` or an abstention)."""
        policy = self._policy
        return GuardSummary.of(policy.verdicts, self.options.mode, self.alpha, policy.tokens, policy.tokens_scored,
                               policy.abstained, policy.steered, self.rule.calibrated)


_UNSTEERED: dict[str, type[Mode]] = {"pass": Pass, "flag": Flag, "abstain": Abstain}


def _mode_for(options: GuardOptions, alpha: float, strength: float | None) -> Mode:
    """The mode ``options`` ask for, fresh for one choice.

    Args:
        options: the request's options.
        alpha: the request's conformal alpha.
        strength: the steering strength (``None``: no steering vector is loaded).

    Raises:
        RequestOptionError: mode "steer" without a steering ``strength`` (param ``guard.mode``).
    """
    if options.mode != "steer":
        return _UNSTEERED[options.mode]()
    if strength is None:
        raise RequestOptionError("guard.mode='steer' needs a steering vector: this guard has none loaded; start it "
                                 "with a steering vector (--steering) or use another mode", param="guard.mode")
    if options.steer_how == "always":
        return Always(SteerPoint(kind="request", how="always", alpha=alpha, strength=strength, position=None,
                                 kept_chars=0))
    return SteerContinue(strength) if options.steer_how == "continue" else SteerRegenerate(strength)
