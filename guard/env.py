"""The one registry of environment variables guard reads.

``os.environ`` is read here and nowhere else. Each variable is declared once with its meaning;
:func:`read` returns the raw string (or ``None``) so the config layer can validate it.
"""

from __future__ import annotations

import os

__all__ = ["ENV_VARS", "read", "cache_home"]

#: name -> meaning. Add a variable here before reading it anywhere.
ENV_VARS: dict[str, str] = {
    # Directory for prepared models and other caches (default: ~/.cache/guard).
    "GUARD_HOME": "cache directory for prepared models (default ~/.cache/guard)",
    # Model to serve/score: 'default' (embedded SmolLM2), an HF folder, or a hub id.
    "GUARD_MODEL": "model: 'default', a local HF folder, or a hub id",
    # Path of the probe artefact (.safetensors with its .json manifest).
    "GUARD_PROBE": "probe artefact path",
    "GUARD_GATE": "pre-generation gate artefact path (scored with the probe)",
    # A steering-vector artefact; requests steer with extra_args guard_steer / guard_steer_from.
    "GUARD_STEERING": "steering-vector artefact path",
    "GUARD_UPSTREAM_GUARDED": "guard proxy: 1 when the upstream is guard serve (the guard object is passed on)",
    "GUARD_STEER_ALPHA": "guard serve: default steering strength of mode 'steer' (default: the vector's)",
    "GUARD_USE_GATE": "guard serve: load a pre-generation gate (1, default) or not (0)",
    # Comma-separated decoder layers to capture when no probe is given.
    "GUARD_LAYERS": "comma-separated decoder layer indices to capture",
    # '1' forces eager mode (no torch.compile) in the engine.
    "GUARD_ENFORCE_EAGER": "1 to run the engine in eager mode",
    # '1' keeps vLLM prefix caching on (cached prompt tokens are then not scored).
    "GUARD_PREFIX_CACHING": "1 to keep prefix caching on",
    # Score channel endpoint (zmq address) the engine workers push scores to.
    "GUARD_SCORE_ENDPOINT": "zmq endpoint for worker -> consumer scores",
    # KV cache size for the CPU engine, in GiB.
    "GUARD_KV_CACHE_GIB": "CPU KV cache size in GiB (sets VLLM_CPU_KVCACHE_SPACE)",
    # The settings of `guard serve` (adapters/http/settings.py); each overrides the --config YAML file's key
    # of the same name (lowercase, without GUARD_) and is overridden by the command-line flag.
    # YAML file with `guard serve` settings (the --config flag wins).
    "GUARD_CONFIG": "guard serve: YAML settings file",
    # Interface the server listens on.
    "GUARD_HOST": "guard serve: listen address (default 127.0.0.1)",
    # TCP port the server listens on.
    "GUARD_PORT": "guard serve: listen port (default 8000)",
    # Model name clients send in `model` (default: the --model value).
    "GUARD_SERVED_MODEL_NAME": "guard serve: model name clients use",
    # Guard mode of requests that do not set guard.mode.
    "GUARD_MODE": "guard serve: default mode, pass|flag|abstain|steer",
    # Text sent instead of an unverified answer when a request does not set guard.abstain_message.
    "GUARD_ABSTAIN_MESSAGE": "guard serve: default abstain message",
    # Largest request body accepted, in bytes.
    "GUARD_MAX_REQUEST_BYTES": "guard serve: request body limit in bytes",
    # Seconds to wait for the upstream vLLM server to answer (per read).
    "GUARD_UPSTREAM_TIMEOUT": "guard serve: upstream read timeout in seconds",
    # Seconds to wait, after a response ends, for its last token scores.
    "GUARD_SCORE_TIMEOUT": "guard serve: wait for the last scores, in seconds",
    # Seconds to wait for the upstream vLLM server to become healthy at start-up.
    "GUARD_STARTUP_TIMEOUT": "guard serve: upstream start-up limit in seconds",
    # Engine context length of the served model.
    "GUARD_MAX_MODEL_LEN": "guard serve: engine max_model_len",
    # Engine batch size (concurrent sequences).
    "GUARD_MAX_NUM_SEQS": "guard serve: engine max_num_seqs",
    "GUARD_VLLM_ARGS": "guard serve/proxy: further `vllm serve` arguments for the engine, one shell-quoted string",
    # What the client gets when the guard cannot judge an answer (scores missing, reader failed).
    "GUARD_ON_GUARD_FAILURE": "guard serve/proxy: fail_open (pass, marked unverified) or fail_closed (abstain)",
    # Opt-in logging of prompts and completions (off by default; a warning at start-up when on).
    "GUARD_LOG_CONTENT": "guard serve/proxy: 1 to log prompts and completions",
    # SIGTERM drains running requests for at most this long, then aborts the rest and stops the engine.
    "GUARD_SHUTDOWN_TIMEOUT": "guard serve/proxy: seconds to drain on SIGTERM before aborting (default 5)",
    # Also serve vLLM's own app, unguarded, on this loopback port (comparisons and benchmarks; off by default).
    "GUARD_ENGINE_PORT": "guard serve: loopback port for vLLM's own (unguarded) app, for comparisons",
    # Clients must send `Authorization: Bearer <key>` (all routes but health and metrics); never logged.
    "GUARD_API_KEY": "guard serve/proxy: API key clients must send as a Bearer token",
    "GUARD_LOG_LEVEL": "guard serve/proxy: level of the guard's log (debug, info, warning, error; default info)",
    "GUARD_LOG_FORMAT": "guard serve/proxy: text (timestamped lines, default) or json (one object per line)",
    "GUARD_ACCESS_LOG": "guard serve/proxy: 0 to drop the per-request access line (content-free; on by default)",
    "GUARD_OTEL": "guard serve/proxy: 1 for OpenTelemetry spans of requests and upstream calls (the otel extra; "
                  "OTEL_* variables configure the export)",
    # `guard proxy` reads the same settings as `guard serve` (its engine is the local reader), plus:
    # Base URL of the foreign OpenAI-compatible API, as an OpenAI SDK's base_url (http:// or https://).
    "GUARD_UPSTREAM": "guard proxy: base URL of the foreign OpenAI-compatible API",
    # Seconds of silence after which a held proxy stream (mode abstain) sends an SSE keep-alive comment.
    "GUARD_SSE_KEEPALIVE": "guard proxy: seconds between SSE keep-alive comments of a held stream (default 15)",
    # Allow a tcp:// score endpoint off the loopback interface (the channel is unauthenticated).
    "GUARD_SCORE_REMOTE": "engine: 1 to allow a tcp:// score endpoint that is not on loopback (private networks only)",
    # The key guard proxy sends the foreign API (instead of the client's, when the proxy has its own key).
    "GUARD_UPSTREAM_API_KEY": "guard proxy: API key sent to the foreign API as a Bearer token",
}


def read(name: str) -> str | None:
    """Return the value of a declared guard environment variable, or ``None`` if unset.

    Raises:
        KeyError: ``name`` is not declared in :data:`ENV_VARS` (a programming error).
    """
    if name not in ENV_VARS:
        raise KeyError(f"undeclared guard environment variable {name!r}; declare it in guard/env.py")
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def cache_home() -> str:
    """Directory under which guard keeps prepared models (``$GUARD_HOME`` or ``~/.cache/guard``)."""
    return read("GUARD_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "guard")
