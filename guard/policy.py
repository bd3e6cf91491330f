"""The guard's decision: per-request options, sentence verdicts and the per-choice state machine.

Contract (what a guarded response promises):

* **Sentences.** The generated text is split by :class:`~guard.sentences.SentenceSplitter`.
* **Pooling and conformal sets** as :mod:`guard.verdicts` defines them (per-label Mondrian p-values).
* **Flag.** A sentence is *flagged* when "true" is not in its set. Finite-sample meaning: among
  sentences that are in fact true, at most alpha are flagged on average, provided they are
  exchangeable with the probe's calibration statements. Verdicts: ``supported`` (the set is exactly
  {"true"}), ``flagged``, ``uncertain`` (otherwise). A sentence none of whose tokens has a score is
  ``unscored`` and is never flagged.
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
abstain message and stops: sentences already emitted stay, and nothing unverified is ever sent.

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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from guard.errors import AdapterError, RequestOptionError
from guard.options import DEFAULT_ABSTAIN_MESSAGE, GuardOptions, parse_guard_options
from guard.outbox import NOTHING, Outbox
from guard.sentences import Sentence, SentenceSplitter
from guard.verdicts import (
    AbstainReason,
    GuardEvent,
    GuardSummary,
    SentenceVerdict,
    SteerPoint,
    TokenScore,
    VerdictRule,
    response_decision,
)

__all__ = ["DEFAULT_ABSTAIN_MESSAGE", "GuardOptions", "parse_guard_options", "response_decision", "TokenScore",
           "GuardEvent", "StreamGuard"]


class StreamGuard:
    """The per-choice state machine: feed text and scores as they arrive, emit what is safe to send.

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

    Raises:
        RequestOptionError: ``options.alpha`` cannot be served by this probe (param ``guard.alpha``),
            or mode "steer" without a ``steer_strength``.

    Example:
        >>> from guard.conformal import MondrianConformal
        >>> rule = VerdictRule(("true", "false"), "last", MondrianConformal.from_scores(0.1, [[i / 20 for i in range(1, 20)]] * 2))
        >>> g = StreamGuard(rule, GuardOptions(mode="abstain"))
        >>> g.add_text(7, "Paris is in France.").text, g.add_text(8, "").text   # held until decided
        ('', '')
        >>> g.add_probs(7, np.array([0.95, 0.05])).text   # the sentence is not closed yet
        ''
        >>> g.finish().text, g.summary().decision
        ('Paris is in France.', 'pass')
    """

    def __init__(self, rule: VerdictRule, options: GuardOptions | None = None,
                 steer_strength: float | None = None) -> None:
        self.rule, self.options = rule, options or GuardOptions()
        self.alpha = self.options.alpha if self.options.alpha is not None else rule.alpha
        if not rule.serves(self.alpha):
            raise RequestOptionError(
                f"guard.alpha={self.alpha} cannot be served: probe {rule.name!r} was calibrated at alpha={rule.alpha} "
                f"and stores no calibration scores; omit guard.alpha (or use {rule.alpha}), or re-run `guard calibrate`",
                param="guard.alpha")
        mode = self.options.mode
        if mode == "steer" and steer_strength is None:
            raise RequestOptionError("guard.mode='steer' needs a steering vector: this guard has none loaded; start it "
                                     "with a steering vector (--steering) or use another mode", param="guard.mode")
        self.steer_strength = steer_strength
        always = mode == "steer" and self.options.steer_how == "always"
        self._hold = mode == "abstain" or (mode == "steer" and not always)  # text waits for its sentence's decision
        self._steering = self._hold and mode == "steer"  # a flagged sentence asks for steering
        self._splitter = SentenceSplitter()
        self._closed: deque[tuple[Sentence, int]] = deque()  # closed, not yet decided; (sentence, emit-up-to chars)
        self._probs: dict[int, tuple[float, ...]] = {}  # position -> k class probabilities
        self._raw: dict[int, np.ndarray] = {}  # position -> (L, k), max pooling only
        self._unreleased: deque[tuple[int, int, int]] = deque()  # (position, char offset, length)
        self._log: list[tuple[int, str]] = []  # mode "steer" before steering: every token, to resume from
        self._pending = ""  # mode "steer": received text not yet emitted
        self._first_position: int | None = None
        self._next_unscored = 0  # every text position below it is scored
        self._forget_from = 0  # scores below it were dropped
        self._ignore_below = -1  # after resume: positions below it belong to the kept (or discarded) text
        self._skip_below = 0  # after resume: sentences below this index were decided before steering
        self._received = self._emitted = self._tokens = self._tokens_scored = 0  # characters, tokens
        self._verdicts: list[SentenceVerdict] = []
        self._abstained: AbstainReason | None = None
        self._steered: SteerPoint | None = None if not always else SteerPoint(
            kind="request", how="always", alpha=self.alpha, strength=steer_strength, position=None, kept_chars=0)
        self._waiting = False  # asked to steer; waits for resume()
        self._finished = False
        self._out = Outbox()  # what the current call releases

    @property
    def stopped(self) -> bool:
        """Whether the server should stop generating this choice: it abstained, or waits to be steered."""
        return self._abstained is not None or self._waiting

    @property
    def steered(self) -> SteerPoint | None:
        """Where and how this choice was (asked to be) steered, if it was."""
        return self._steered

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
        if self._finished:
            raise AdapterError(f"text for position {positions[0]} arrived after finish(); feed all tokens first")
        for position, text in zip(positions, texts, strict=True):
            if self.stopped:
                break
            self._take_text(position, text)
            if self._closed and self._closed[0][0].last < self._next_unscored:
                self._advance()  # a sentence is decidable now: decide it before the next token, as add_text would
        self._advance()
        return self._out.take()

    def _take_text(self, position: int, text: str) -> None:
        closed = self._splitter.feed(position, text)
        if self._first_position is None:
            self._first_position = self._next_unscored = self._forget_from = position
            for early in [p for p in self._probs if p < position]:  # prompt positions: not ours
                self._drop(early)
                self._tokens_scored -= 1
            self._advance_unscored()
        self._tokens += 1
        cut = self._received  # a sentence closed by this token ends, for emission, where this token starts
        self._unreleased.append((position, self._received, len(text)))
        self._received += len(text)
        if closed:
            self._closed.extend((sentence, cut) for sentence in closed)
        if self._steering and self._steered is None:
            self._log.append((position, text))
        if not self._hold:
            self._emit(text)
        elif self._steering:
            self._pending += text

    def add_probs(self, position: int, probs: np.ndarray) -> GuardEvent:
        """Add token ``position``'s class probabilities ``(k,)`` in the probe's label order.

        Raises:
            AdapterError: wrong shape, non-finite values, a duplicate position, or a ``max``-pooling
                probe (which needs :meth:`add_scores`).
        """
        if self.rule.pooling == "max":
            raise AdapterError(f"probe {self.rule.name!r} pools by 'max' over raw per-layer scores; feed them with "
                               "add_scores(position, scores) of shape (layers, labels), not probabilities")
        probs = np.asarray(probs, np.float64)[None]
        self.rule.check_values([position], probs, (len(self.rule.labels),), "probs")
        return self._store([position], [tuple(probs[0].tolist())], None)

    def add_scores(self, position: int, scores: np.ndarray) -> GuardEvent:
        """Add token ``position``'s raw probe scores ``(layers, k)`` (one row of ``TokenScores.scores``).

        Raises:
            AdapterError: wrong shape, non-finite values or a duplicate position.
        """
        return self.add_rows([position], np.asarray(scores)[None])

    def add_rows(self, positions: Sequence[int], scores: np.ndarray) -> GuardEvent:
        """Add the raw probe scores ``(n, layers, k)`` of ``n`` positions at once (what one pull delivered):
        one softmax for all rows, one decision pass.

        Raises:
            AdapterError: wrong shape, non-finite values or a duplicate position.
        """
        scores = np.asarray(scores)
        probs = self.rule.row_probabilities(positions, scores)
        return self._store(positions, probs, np.asarray(scores, np.float64) if self.rule.pooling == "max" else None)

    def finish(self) -> GuardEvent:
        """The stream ended: close the last sentence and decide every closed one with the scores there are."""
        if self._finished or self.stopped:
            return NOTHING
        self._finished = True
        self._closed.extend((sentence, self._received) for sentence in self._splitter.finish())
        self._advance()
        if self._steering and not self.stopped and self._pending:
            self._emit(self._pending)  # "regenerate" held it all, and nothing was flagged
            self._pending = ""
            self._release_scores()
        return self._out.take()

    def gate_abstain(self, reason: str = "") -> GuardEvent:
        """The pre-generation gate says no: call before any text. Abstains (modes "flag" and "abstain"), asks
        for steering from the first generated token (mode "steer"), or is ignored (mode "pass", and
        ``steer_how="always"``, which steers from the first token anyway)."""
        if self.stopped or self.options.mode == "pass":
            return NOTHING
        if self._steering:
            self._ask_to_steer(None, "gate", self.alpha)
        elif self.options.mode != "steer":  # steer_how "always": already steered from the first token
            self._abstain(AbstainReason(kind="gate", alpha=self.alpha, detail=reason))
        return self._out.take()

    def fail_closed(self, reason: str = "") -> GuardEvent:
        """The guard cannot judge the answer (``on_guard_failure: fail_closed``): abstain, kind ``guard_failure``
        (every mode but "pass")."""
        if not self.stopped and self.options.mode != "pass":
            self._abstain(AbstainReason(kind="guard_failure", alpha=self.alpha, detail=reason))
        return self._out.take()

    def resume(self) -> GuardEvent:
        """Steering has started: drop what it replaces and go on as in mode "flag".

        Then feed the steered tokens and scores: from :attr:`SteerPoint.position` on (``continue``),
        or from the first generated position (``regenerate``, the gate); scores of earlier positions
        are ignored. Returns the kept text not yet emitted (``continue``: whitespace at most).

        Raises:
            AdapterError: the guard did not ask to steer, or already resumed.
        """
        if not self._waiting or self._steered is None:
            raise AdapterError("resume() without a pending steering request; call it once after GuardEvent.steer")
        point = self._steered
        cut = point.position if point.position is not None else (self._first_position or 0)
        kept = [(p, t) for p, t in self._log if p < cut] if point.how == "continue" else []
        self._log = []
        self._splitter = SentenceSplitter()
        for p, t in kept:  # sentences closed here were decided before steering
            self._splitter.feed(p, t)
        self._closed.clear()
        for p in [p for p in self._probs if p >= cut]:
            self._drop(p)
        self._unreleased = deque(u for u in self._unreleased if u[0] < cut)
        if point.how == "regenerate":
            self._verdicts = []
            self._unreleased.clear()
        self._tokens = self._tokens_scored = len(kept)
        self._received = sum(len(t) for _, t in kept)
        self._emitted = min(self._emitted, self._received)
        self._ignore_below = cut
        self._skip_below = point.flagged.index if (point.flagged is not None and point.how == "continue") else 0
        self._next_unscored = min(self._next_unscored, cut)
        self._forget_from = min(self._forget_from, cut)
        self._hold = self._waiting = self._finished = False
        text, self._pending = ("".join(t for _, t in kept)[self._emitted:], "")
        if text:
            self._emit(text)
        self._release_scores()
        return self._out.take()

    def summary(self) -> GuardSummary:
        """The response-level verdict so far (final after :meth:`finish` or an abstention)."""
        return GuardSummary.of(self._verdicts, self.options.mode, self.alpha, self._tokens, self._tokens_scored,
                               self._abstained, self._steered)

    def _store(self, positions: Sequence[int], probs: list[tuple[float, ...]], raw: np.ndarray | None) -> GuardEvent:
        for position in positions:
            if position in self._probs and position >= self._ignore_below:
                raise AdapterError(f"position {position} was scored twice; deliver each token's score once")
        if self.stopped or self._finished:
            return NOTHING
        floor = max(self._ignore_below, self._forget_from if self._first_position is not None else -1)
        for i, position in enumerate(positions):
            if position < floor:
                continue  # prompt tokens, kept text, or a sentence already decided without it
            self._probs[position] = probs[i]
            if raw is not None:
                self._raw[position] = raw[i]
            self._tokens_scored += 1
        self._advance_unscored()
        self._advance()
        return self._out.take()

    def _advance_unscored(self) -> None:
        if self._first_position is not None:
            while self._next_unscored in self._probs:
                self._next_unscored += 1

    def _advance(self) -> None:
        """Decide every closed sentence whose tokens are all scored (all, once finished), in order."""
        while self._closed and not self.stopped and (self._finished or self._closed[0][0].last < self._next_unscored):
            self._decide(*self._closed.popleft())
        self._release_scores()

    def _decide(self, sentence: Sentence, cut: int) -> None:
        if sentence.index < self._skip_below:
            return  # decided before steering, on the same tokens
        scored = [p for p in range(sentence.first, sentence.last + 1) if p in self._probs]
        pooled = None
        if scored:
            pooled = (self.rule.pool_max([self._raw[p] for p in scored]).tolist() if self.rule.pooling == "max"
                      else self._probs[scored[-1]])
        verdict = self.rule.judge(sentence, pooled, len(scored), self.alpha)
        if self._hold and verdict.verdict == "flagged":
            if self._steering:
                self._ask_to_steer(verdict, "sentence", self.alpha)
            else:
                self._verdicts.append(verdict)
                self._out.sentences.append(verdict)
                self._abstain(AbstainReason(kind="sentence", alpha=self.alpha, sentence=sentence.index,
                                            p_true=verdict.p_true))
            return
        self._verdicts.append(verdict)
        self._out.sentences.append(verdict)
        if not self._hold:
            return
        if not self._steering:
            self._emit(sentence.text)
        elif self.options.steer_how == "continue" and cut > self._emitted:
            n = cut - self._emitted
            self._emit(self._pending[:n])
            self._pending = self._pending[n:]
        # "regenerate": everything waits for finish()

    def _ask_to_steer(self, verdict: SentenceVerdict | None, kind: str, alpha: float) -> None:
        how = self.options.steer_how
        position = verdict.first if (verdict is not None and how == "continue") else None
        kept = 0
        if position is not None:
            kept = sum(len(t) for p, t in self._log if p < position)
        assert self.steer_strength is not None  # checked at construction
        self._steered = self._out.steer = SteerPoint(kind=kind, how=how, alpha=alpha, strength=self.steer_strength,
                                                     position=position, kept_chars=kept, flagged=verdict)
        self._waiting = True
        self._closed.clear()

    def _emit(self, text: str) -> None:
        self._out.text.append(text)
        self._emitted += len(text)

    def _abstain(self, reason: AbstainReason) -> None:
        self._abstained = self._out.abstained = reason
        self._out.text.append(self.options.message)
        self._closed.clear()

    def _release_scores(self) -> None:
        """Release scores of tokens whose text has begun to be emitted, in position order; forget old ones."""
        while self._unreleased and not self.stopped:
            position, offset, length = self._unreleased[0]
            begun = offset < self._emitted or (length == 0 and offset <= self._emitted)
            if not begun or (position not in self._probs and not self._finished):
                break  # in order: a later score waits for an earlier one until the stream ends
            self._unreleased.popleft()
            if position in self._probs:
                self._out.scores.append(TokenScore(position, self._probs[position]))
        if self._verdicts and self._first_position is not None:
            keep = min(self._verdicts[-1].last, self._unreleased[0][0] if self._unreleased else self._next_unscored)
            for position in range(self._forget_from, keep):
                self._drop(position)
            self._forget_from = max(self._forget_from, keep)

    def _drop(self, position: int) -> None:
        self._probs.pop(position, None)
        self._raw.pop(position, None)
