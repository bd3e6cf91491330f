"""Guardrail-framework adapters: LiteLLM's proxy and NeMo Guardrails ask guard proxy's judge endpoint
(``POST /v1/guard/check``) for verdicts on answers they already hold.

:mod:`adapters.guardrails.judge` is the shared HTTP client (httpx only);
:mod:`adapters.guardrails.litellm_guardrail` (extra ``guard[litellm]``) and
:mod:`adapters.guardrails.nemo_action` (extra ``guard[nemo]``) import their framework, so import them only
where it is installed. This package talks to guard over HTTP and imports neither ``adapters.http`` nor
``adapters.vllm``; the verdict's shape comes from :mod:`guard.client`. See docs/serving.md, "Guardrail
frameworks".
"""

from adapters.guardrails.judge import GuardJudge, JudgeError, Judgement

__all__ = ["GuardJudge", "Judgement", "JudgeError"]
