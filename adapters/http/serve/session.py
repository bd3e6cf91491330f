"""One guarded request on the server: its tokens and their scores fed to a :class:`StreamGuard`.

Position contract (see docs/serving.md): generated token ``i`` of a request whose prompt has
``n_prompt`` tokens sits at sequence position ``n_prompt + i``. Its score is computed when it is
fed back into the model, one engine step after it was generated, and the very last generated
token is never fed back, so it has no score. Scores arrive on the request's guard key in the
:class:`ScoreFeed`; the session takes those from ``n_prompt`` on as the response streams, and
at the end waits (on the event loop) for positions up to ``n_prompt + n_gen - 2``.

Text per token: a streamed chunk's text is given to the chunk's last token, and its other tokens
get ``""`` (vLLM sends one token per chunk except when it holds text back, e.g. for stop strings);
a non-streamed answer's text is split per token by the tokenizer (:mod:`adapters.http.tokens`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from adapters.http.errors import UpstreamError
from adapters.http.failure import FailurePolicy, GuardFailure, answer_unjudged, fail, scores_missing
from adapters.http.score_feed import ScoreFeed
from adapters.http.serve.clock import RequestClock
from adapters.http.serve.sampling import Samples
from guard.answer_check import AnswerDecision, AnswerRule, AnswerTally
from guard.errors import RequestOptionError
from guard.gating import GateDecision, GateRule
from guard.metrics import GuardMetrics
from guard.outbox import Outbox
from guard.policy import GuardEvent, GuardOptions, StreamGuard, TokenScore
from guard.scores import combine
from guard.verdicts import GuardSummary, VerdictRule

__all__ = ["GuardSession"]


class GuardSession:
    """The guard's state for one request (one choice).

    Args:
        rule: the probe's verdict rule.
        options: the request's guard options.
        key: the request's guard key.
        feed: where its scores arrive.
        metrics: where per-token probe latency is observed.
        score_timeout: seconds :meth:`finish` waits for the last scores.
        streamed: whether text arrives token by token (only then is probe latency observed: a
            non-streamed answer's text arrives after all but its last scores).
        gate: the pre-generation gate whose columns follow the probe's in every score row (``None``:
            rows hold the probe's columns only); an on-policy gate also judges whole answers when the request
            asks for ``answer_check`` (:mod:`guard.answer_check`), with the samples' agreement when it asks for
            ``answer_samples`` (the relay sets :attr:`samples`).
        on_failure: ``on_guard_failure``: what :meth:`finish` does when the last scores do not arrive.
        steer_strength: the steering strength of mode "steer" (``None``: this server cannot steer).
        upstream_timeout: seconds :meth:`finish` waits for the answer check's samples.
        question: the question's text, read by a gate with a question scope (:mod:`guard.scope`).

    Raises:
        RequestOptionError: the options ask for an alpha the probe cannot serve, or for an answer check (or its
            samples) this server's gate cannot make.
    """

    def __init__(self, rule: VerdictRule, options: GuardOptions, key: str, feed: ScoreFeed, metrics: GuardMetrics,
                 score_timeout: float, streamed: bool = True, gate: GateRule | None = None,
                 on_failure: FailurePolicy = "fail_open", steer_strength: float | None = None,
                 upstream_timeout: float = 300.0, question: str = "") -> None:
        self.answers = None if gate is None or not options.answer_check or options.mode == "pass" else gate.answers
        if options.answer_check and self.answers is None and options.mode != "pass":
            raise RequestOptionError("guard.answer_check=true needs an on-policy gate with an answer combiner; this "
                                     "server has none loaded (start it with a gate made by `guard calibrate-answers "
                                     "--ship PATH`), or drop guard.answer_check", param="guard.answer_check")
        if options.answer_samples and self.answers is not None and self.answers.sampling is None:
            raise RequestOptionError("guard.answer_samples=true needs a gate calibrated with samples (an answer "
                                     "sampling in its manifest); this server's gate has none (re-make it with `guard "
                                     "calibrate-answers --ship PATH`), or drop guard.answer_samples",
                                     param="guard.answer_samples")
        self.guard = StreamGuard(rule, options, steer_strength, whole_answer=self.answers is not None)
        self.options = options
        self.gate = gate if options.gate and options.mode != "pass" else None
        self.gate_decision: GateDecision | None = None
        self.question = question  #: the question's text (the last user message, or the prompt): the gate's scope
        self.tally = AnswerTally()  #: the answer check's signals so far
        self.answer_decision: AnswerDecision | None = None
        #: the answer check's samples, drawn upstream (set by the relay for ``answer_samples``)
        self.samples: Samples | None = None
        self._said: list[str] | None = [] if self.answers is not None and options.answer_samples else None
        self._samples_error = ""
        self._k = rule.columns  # the probe's label and shift columns of a (possibly gate-fused) row
        self.key, self.feed, self.metrics, self.score_timeout = key, feed, metrics, score_timeout
        self.upstream_timeout = upstream_timeout
        self.streamed = streamed
        self.n_prompt: int | None = None  #: the first position of the (current) generation's tokens
        self.n_prompt_first: int | None = None  #: the client's prompt length
        self.n_gen = 0
        self.clock = RequestClock()  #: the guard's time on this request (wraps the work below from outside)
        self.scores_complete = True  #: false when the last scores did not arrive in time
        self.on_failure = on_failure  #: what a guard failure does (:mod:`adapters.http.failure`)
        self.failure: GuardFailure | None = None  #: set when the last scores did not arrive in time
        self.released: list[TokenScore] = []  #: every token score released so far
        self._next_score = 0
        self._carry = ""  # text that came without a token id, given to the next token
        self._text_time: dict[int, float] = {}
        self._outbox = Outbox()  # what the guard released since the last drain

    @property
    def stopped(self) -> bool:
        """Whether the guard abstained or asks to steer: stop this generation."""
        return self.guard.stopped

    @property
    def wants_steering(self) -> bool:
        """Whether the guard waits for a steered generation (:mod:`adapters.http.serve.steer`)."""
        return self.guard.stopped and self.guard.steered is not None

    def restart(self, key: str, first_position: int) -> None:
        """Steering starts: scores now arrive under ``key``, generated positions go on from ``first_position``."""
        self.feed.close(self.key)
        self.key, self.n_prompt, self._next_score = key, first_position, first_position
        self.n_gen, self._carry, self.scores_complete = 0, "", True
        self.answers = None  # the check was calibrated on unsteered answers: a steered one is not judged
        self._text_time.clear()
        self._merge(self.guard.resume())

    def start(self, n_prompt: int) -> None:
        """Set the prompt length (the first generated token's position); later calls are ignored."""
        if self.n_prompt is None:
            self.n_prompt = self.n_prompt_first = self._next_score = n_prompt

    async def check_gate(self) -> None:
        """Before any text: wait for the prompt's last-token row and let the gate decide (once).

        The row comes from the prefill step, which also produced the first token, so the wait is
        normally nil. If it does not arrive within the score timeout the gate stays undecided
        (reported as ``gate: null``) and the answer proceeds.
        """
        if ((self.gate is None and self.answers is None) or self.gate_decision is not None
                or self.tally.gate_logit is not None or self.n_prompt is None or self.n_prompt < 1):
            return
        row = self.n_prompt - 1
        with self.clock.timed():
            segments = self.feed.take_segments(self.key, row)
        if not segments:  # the prefill step's rows are not in yet
            with self.clock.waiting():
                if await self.feed.wait_for(self.key, self.n_prompt, self.score_timeout):
                    segments = self.feed.take_segments(self.key, row)
        with self.clock.timed():
            if not segments or segments[0].start != row:
                self.gate = None  # and the answer check cannot judge (finish says so)
                return
            if self.answers is not None:
                self.answers.add_prompt_row(self.tally, segments[0].scores[0])
            if self.gate is None:
                return
            self.gate_decision = d = self.gate.decide(segments[0].scores[0], self.options.gate_alpha, self.question)
            if not d.answer:
                self._merge(self.guard.gate_abstain(
                    f"the pre-generation gate gives p(correct)={d.p_correct:.3f} < certified threshold {d.threshold} "
                    f"at gate alpha {d.alpha}"))

    def add_chunk(self, token_ids: Sequence[int], text: str) -> None:
        """A streamed chunk: its text goes to its last token, ``""`` to the others."""
        if not token_ids:
            self._carry += text
            return
        self.add_pieces([text] if len(token_ids) == 1 else [""] * (len(token_ids) - 1) + [text])

    def add_logprobs(self, values: Sequence[float] | None, tokens: int) -> None:
        """The log-probabilities the upstream sent with ``tokens`` generated tokens (read by the answer check)."""
        if self.answers is not None:
            self.tally.add_logprobs(values, tokens)

    def add_pieces(self, pieces: list[str]) -> None:
        """The texts of the next generated tokens, one per token, in order."""
        first = self._base() + self.n_gen
        positions = range(first, first + len(pieces))
        if self.streamed:
            now = time.perf_counter()
            for position in positions:
                self._text_time[position] = now
        if self._carry and pieces:
            pieces = [self._carry + pieces[0], *pieces[1:]]
            self._carry = ""
        self._merge(self.guard.add_texts(positions, pieces))
        if self._said is not None:
            self._said.extend(pieces)
        self.n_gen += len(pieces)

    def pull(self) -> None:
        """Feed the scores that have arrived since the last pull (never blocks)."""
        if self.n_prompt is None:
            return
        segments = self.feed.take_segments(self.key, self._next_score)
        if not segments:
            return
        if len(segments) == 1:  # one engine step's rows: what a stream usually brings
            positions: Sequence[int] = range(segments[0].start, segments[0].start + segments[0].n)
            scores = segments[0].scores
        else:  # several steps' rows (a non-streamed answer, or a stream that fell behind): one batch
            got = combine(self.key, segments)
            positions, scores = got.positions.tolist(), got.scores
        self._merge(self.guard.add_rows(positions, scores[:, :, : self._k]))
        if self.answers is not None:
            self.answers.add_answer_rows(self.tally, scores)
        if self._text_time:
            now = time.perf_counter()
            for position in positions:
                if (sent := self._text_time.pop(position, None)) is not None:
                    self.metrics.observe_probe_latency(max(0.0, now - sent))
        self._next_score = positions[-1] + 1

    async def finish(self) -> None:
        """The response ended: wait for the last scores, feed them and decide every sentence."""
        n_gen = self.n_gen
        if self._carry:
            self.add_pieces([""])  # text with no token of its own: a final, never-scored position
        if self.n_prompt is not None and n_gen >= 2 and not self.stopped:
            # positions n_prompt .. n_prompt + n_gen - 2 have scores; the last token is never fed back
            until = self.n_prompt + n_gen - 1
            with self.clock.waiting():
                self.scores_complete = await self.feed.wait_for(self.key, until, self.score_timeout)
        if self.samples is not None and self.answers is not None and not self.stopped and self.scores_complete:
            await self._agreement(self.samples)
        with self.clock.timed():
            self.pull()
            # the guard cannot judge the whole answer: adapters.http.failure's policy (only the wait above, with a
            # prompt length, leaves the scores incomplete)
            if not self.scores_complete and self.n_prompt is not None:
                self.failure = scores_missing(self._next_score - self.n_prompt, n_gen - 1, self.score_timeout)
                self._merge(fail(self.guard, self.failure, self.on_failure))
            elif self.answers is not None and not self.stopped:
                self._check_answer(self.answers, n_gen)
            self._merge(self.guard.finish())

    async def _agreement(self, samples: Samples) -> None:
        """Wait for the samples (as long as the upstream may take to answer) and read their agreement."""
        with self.clock.waiting():
            try:
                self.tally.agreement = await samples.agreement("".join(self._said or ()), self.upstream_timeout)
                self.tally.samples = samples.sampling.samples
            except UpstreamError as exc:
                self._samples_error = f"its samples failed ({exc.message})"

    def _check_answer(self, answers: AnswerRule, n_gen: int) -> None:
        """The answer check on the complete answer; in mode abstain, one it cannot judge is a guard failure."""
        d = None if self._samples_error else answers.decide(self.tally, self.options.answer_alpha, tokens=n_gen)
        self.answer_decision = d
        if d is not None:
            self._merge(self.guard.judge_answer(d.answer, d.reason(), d.alpha))
        elif self.options.mode == "abstain":  # the check decides there: the failure policy says what goes out
            self.failure = answer_unjudged(self._samples_error or (
                "the prompt's last score row did not arrive" if self.tally.gate_logit is None
                else "the upstream sent no log-probabilities for some generated tokens"))
            self._merge(fail(self.guard, self.failure, self.on_failure))

    def close(self) -> None:
        """Forget the request's scores (and drop any that still arrive); stop drawing samples."""
        self.feed.close(self.key)
        if self.samples is not None:
            self.samples.cancel()

    def drain(self) -> GuardEvent:
        """What the guard released since the last drain."""
        return self._outbox.take()

    def summary(self) -> GuardSummary:
        """The response-level verdict so far."""
        return self.guard.summary()

    def _base(self) -> int:
        if self.n_prompt is None:
            raise UpstreamError("protocol", "the upstream sent generated tokens without the prompt's token ids; guard "
                                "serve needs a vLLM OpenAI server that honours return_token_ids (vLLM >= 0.10)")
        return self.n_prompt

    def _merge(self, event: GuardEvent) -> None:
        if event:
            self._outbox.add(event)
            self.released.extend(event.token_scores)

