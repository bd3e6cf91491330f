"""The settings of ``guard serve``: one frozen pydantic-settings object.

Precedence, lowest first: defaults -> the YAML file named by ``config`` (``--config`` or
``GUARD_CONFIG``) -> ``GUARD_*`` environment variables -> command-line flags. Every setting ``x``
has the YAML key ``x`` and the variable ``GUARD_X`` (declared in :mod:`guard.env`, which is the
only place the environment is read). A bad value is refused with its name, where it came from,
what was expected and how to fix it. :class:`ProxySettings` (``guard proxy``) adds the foreign
``upstream`` and follows the same rules.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from guard import env
from guard.errors import ConfigError
from guard.verdicts import Mode

if TYPE_CHECKING:
    from typing import Self  # Python 3.11+: named in annotations only, never imported at run time

__all__ = ["ServeSettings", "ProxySettings"]


#: ``vllm serve`` flags that mirror a guard setting (see ``ServeSettings._mirror_vllm_args``)
_MIRRORED = {"--max-model-len": "max_model_len", "--max-num-seqs": "max_num_seqs"}


class ServeSettings(BaseSettings):
    """Settings of the guarded OpenAI-compatible server.

    Attributes:
        config: YAML file with any of these settings as keys (not itself read from YAML).
        host / port: where the server listens (loopback by default: put a proxy in front to expose it).
        model: ``"default"`` (embedded SmolLM2-135M-Instruct), an HF folder, or a hub id.
        served_model_name: the name clients send as ``model`` (default: ``model``).
        probe: probe artefact; ``None`` uses the probe shipped for the model.
        gate: pre-generation gate calibrated with the probe; ``None`` uses the gate shipped with a shipped probe.
        use_gate: load a gate at all (requests opt out with ``guard.gate: false``).
        steering: steering-vector artefact the engine loads for mode "steer" (``None``: requests cannot steer).
        steer_alpha: steering strength of requests that set no ``guard.steer_alpha`` (``None``: the vector's
            default strength).
        mode: guard mode of requests that do not set ``guard.mode``.
        abstain_message: text of an abstention when a request sets none (``None``: the guard's default).
        max_request_bytes: larger request bodies get 413.
        upstream_timeout: seconds to wait for each read from the upstream vLLM server (504 beyond).
        score_timeout: seconds to wait, once a response has ended, for its last token scores.
        startup_timeout: seconds to wait for the upstream vLLM server to become healthy.
        enforce_eager / max_model_len / max_num_seqs: engine settings.
        vllm_args: any further ``vllm serve`` arguments for the engine (YAML list, or ``GUARD_VLLM_ARGS`` as one
            shell-quoted string); those after ``--`` on the command line follow them. They come after guard's
            own engine flags, so they win (e.g. ``--dtype bfloat16``); flags the guard must own are refused
            (:mod:`adapters.vllm.server_args`).
        on_guard_failure: when the guard cannot judge an answer the upstream produced (scores missing,
            reader failed): ``fail_open`` passes it marked ``verified: false``, ``fail_closed`` abstains
            (see :mod:`adapters.http.failure`).
        log_content: log prompts and completions (off: never logged; a warning at start-up when on).
        shutdown_timeout: seconds SIGTERM waits for running requests to finish before it aborts the rest
            (the engine is then stopped; keep it under the orchestrator's kill delay, e.g. docker's 10 s).
        api_key: clients must send ``Authorization: Bearer <api_key>`` on every route but health and metrics
            (``GUARD_API_KEY``; prefer the variable to ``--api-key``, which ``ps`` shows). Never logged or printed.
        log_level / log_format: the guard's log (``guard.*`` loggers; vLLM keeps its own): level, and ``text``
            (timestamped lines) or ``json`` (one JSON object per line).
        access_log: one content-free line per request on ``guard.access`` (method, route, status, latency,
            request id; :mod:`adapters.http.request_log`).
        otel: OpenTelemetry spans for requests and upstream calls (:mod:`adapters.http.tracing`; needs the
            ``otel`` extra).
        engine_port: guard serve only: also serve vLLM's own app, unguarded, on ``127.0.0.1:engine_port`` (the
            same engine without the guard: for comparisons and benchmarks; loopback only, off by default).

    Example:
        >>> ServeSettings.build(port=9000, mode="abstain").port
        9000
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid")
    command: ClassVar[str] = "guard serve"

    config: Path | None = None
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8000, ge=1, le=65535)
    model: str = Field(default="default", min_length=1)
    served_model_name: str | None = Field(default=None, min_length=1)
    probe: str | None = Field(default=None, min_length=1)
    gate: str | None = Field(default=None, min_length=1)
    use_gate: bool = True
    steering: str | None = Field(default=None, min_length=1)
    steer_alpha: float | None = Field(default=None, allow_inf_nan=False)
    mode: Mode = "flag"
    abstain_message: str | None = Field(default=None, min_length=1, max_length=2000)
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    upstream_timeout: float = Field(default=300.0, gt=0)
    score_timeout: float = Field(default=5.0, gt=0)
    startup_timeout: float = Field(default=900.0, gt=0)
    enforce_eager: bool = False
    max_model_len: int = Field(default=2048, ge=16)
    max_num_seqs: int = Field(default=64, ge=1)
    on_guard_failure: Literal["fail_open", "fail_closed"] = "fail_open"
    log_content: bool = False
    shutdown_timeout: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    vllm_args: tuple[str, ...] = ()
    engine_port: int | None = Field(default=None, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    access_log: bool = True
    otel: bool = False
    api_key: SecretStr | None = Field(default=None, min_length=1)

    @field_validator("vllm_args", mode="before")
    @classmethod
    def _split_vllm_args(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _mirror_vllm_args(cls, data: Any) -> Any:
        """A passed-through vLLM flag that mirrors a guard setting is what the engine runs with: it becomes the
        setting (the proxy's reader checks prompt lengths against ``max_model_len``)."""
        if not isinstance(data, dict) or not data.get("vllm_args"):
            return data
        raw = data["vllm_args"]
        args = shlex.split(raw) if isinstance(raw, str) else [str(a) for a in raw]
        data = dict(data, vllm_args=args)  # split once: the field validator then gets the list
        for i, token in enumerate(args):
            flag, eq, value = token.partition("=")
            if flag == "--enforce-eager":
                data["enforce_eager"] = True
            elif flag in _MIRRORED and (eq or i + 1 < len(args)):
                data[_MIRRORED[flag]] = value if eq else args[i + 1]
        return data

    @property
    def served_name(self) -> str:
        """The model name clients use."""
        return self.served_model_name or self.model

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: Any, env_settings: Any,
                                   dotenv_settings: Any, file_secret_settings: Any) -> tuple[Any, ...]:
        """Flags (init arguments) over the declared ``GUARD_*`` variables over the YAML file; no dotenv."""
        config = init_settings.init_kwargs.get("config") or env.read("GUARD_CONFIG")
        return init_settings, _RegistryEnv(settings_cls), _YamlFile(settings_cls, config)

    @classmethod
    def build(cls, **flags: Any) -> Self:
        """Build the settings; ``flags`` are command-line values (``None`` means not given).

        Raises:
            ConfigError: a value is invalid or unknown, or the YAML file cannot be read (names the setting,
                its source, the value, what was expected and the fix).
        """
        given = {k: v for k, v in flags.items() if v is not None}
        try:
            return cls(**given)
        except ValidationError as exc:
            raise ConfigError(_explain(cls, exc, given)) from exc


class ProxySettings(ServeSettings):
    """Settings of ``guard proxy``: those of :class:`ServeSettings`, whose engine is the local *reader*
    (``model``, ``probe``, engine limits), plus the foreign API.

    Attributes:
        upstream: base URL of the foreign OpenAI-compatible API as an OpenAI SDK's ``base_url``
            (``https://api.example.com/v1``; a URL without a path gets ``/v1``); http or https, no
            credentials, query or fragment. ``upstream_timeout`` applies to it (and to the reader).
        use_gate: always false: the pre-generation gate predicts whether the *reader* would answer
            correctly, which says nothing about another model's answer.
        upstream_guarded: the upstream is itself ``guard serve``: the client's ``guard`` object is passed
            on (so ``mode: steer`` works through the proxy), and its judged answers pass through unread.
        sse_keepalive: seconds without an event after which a held stream (mode "abstain") sends an SSE comment,
            so idle timeouts of load balancers do not cut it (``GUARD_SSE_KEEPALIVE``).
        upstream_api_key: the key guard proxy sends the foreign API (``GUARD_UPSTREAM_API_KEY``). Without an
            ``api_key`` of its own the proxy passes the client's ``Authorization`` on instead; with one, the
            client's key is the guard's and never leaves the proxy.

    Example:
        >>> ProxySettings.build(upstream="http://127.0.0.1:9000").upstream
        'http://127.0.0.1:9000/v1'
    """

    command: ClassVar[str] = "guard proxy"

    upstream: str = Field(min_length=1)
    use_gate: bool = False
    upstream_guarded: bool = False
    upstream_api_key: SecretStr | None = Field(default=None, min_length=1)
    sse_keepalive: float = Field(default=15.0, gt=0, allow_inf_nan=False)

    @field_validator("upstream")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// base URL such as https://api.example.com/v1")
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
        if parts.username is not None or parts.password is not None:
            raise ValueError("credentials in the URL are refused (GET /healthz shows the URL); clients send their "
                             "key in the Authorization header, which guard proxy passes on")
        if parts.query or parts.fragment:
            raise ValueError("expected a base URL without query or fragment")
        return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") or "/v1", "", ""))

    @field_validator("use_gate")
    @classmethod
    def _no_gate(cls, value: bool) -> bool:
        if value:
            raise ValueError("guard proxy has no pre-generation gate (it predicts whether the reader would answer, "
                             "not the upstream); set use_gate to false or leave it out")
        return value

    @field_validator("engine_port")
    @classmethod
    def _no_engine_port(cls, value: int | None) -> int | None:
        if value is not None:
            raise ValueError("guard proxy has no unguarded engine port (its reader is private); leave engine_port "
                             "out (it is a guard serve setting)")
        return value


def _env_name(field: str) -> str:
    return f"GUARD_{field.upper()}"


class _RegistryEnv(PydanticBaseSettingsSource):
    """``GUARD_<FIELD>`` variables, read through guard's env registry."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return env.read(_env_name(field_name)), field_name, False

    def __call__(self) -> dict[str, Any]:
        values = {}
        for name in self.settings_cls.model_fields:
            if name != "config" and (raw := env.read(_env_name(name))) is not None:
                values[name] = raw
        return values


class _YamlFile(PydanticBaseSettingsSource):
    """The ``--config`` YAML file: a mapping of setting names to values."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return _read_yaml(self.path) if self.path else {}


def _read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({exc.strerror}); pass an existing YAML file "
                          "to --config (or GUARD_CONFIG)") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML ({exc}); fix its syntax") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} holds a {type(raw).__name__}; expected a mapping of settings "
                          "such as 'port: 8000'")
    if "config" in raw:
        raise ConfigError(f"config file {str(path)!r} sets 'config'; a config file cannot name another one")
    return raw


def _source(cls: type[ServeSettings], field: str, given: dict[str, Any]) -> str:
    """Where the winning value of ``field`` came from (same precedence as the sources)."""
    if field in given:
        return f"--{field.replace('_', '-')}"
    if field != "config" and field in cls.model_fields and env.read(_env_name(field)) is not None:
        return _env_name(field)
    return f"config file {str(given.get('config') or env.read('GUARD_CONFIG'))!r}"


def _shown(value: Any) -> Any:
    """A value as an error message may show it: a URL's credentials are masked (never print a key)."""
    if isinstance(value, str) and "://" in value and "@" in value:
        try:
            parts = urlsplit(value)
        except ValueError:
            return "<a URL that cannot be shown>"
        if parts.username is not None or parts.password is not None:
            host = parts.netloc.rpartition("@")[2]
            return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))
    return value


def _explain(cls: type[ServeSettings], exc: ValidationError, given: dict[str, Any]) -> str:
    problems = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        source = _source(cls, field, given)
        if err["type"] == "extra_forbidden":
            problems.append(f"{field!r} (from {source}) is not a setting of {cls.command}: expected one of "
                            f"{', '.join(cls.model_fields)}; remove or rename it")
        elif err["type"] == "missing":
            problems.append(f"{field} is required: pass --{field.replace('_', '-')}, set {_env_name(field)} or "
                            f"the config file's {field!r} key")
        else:
            problems.append(f"{field}={_shown(err.get('input'))!r} (from {source}) is invalid: {err['msg'].lower()}; "
                            f"fix {source}")
    return f"invalid {cls.command} settings: " + "; ".join(problems)
