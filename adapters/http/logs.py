"""One logging configuration for the guard's servers: the ``guard`` loggers (server errors, the 499 line, the
access line, content when ``log_content`` is on) to stderr with timestamps, or as one JSON object per line.

vLLM configures its own ``vllm`` loggers; uvicorn's stay at warning. Called once at start-up.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

__all__ = ["configure_logging"]

_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: Literal["debug", "info", "warning", "error"] = "info",
                      fmt: Literal["text", "json"] = "text") -> logging.Handler:
    """Send the ``guard`` loggers to stderr at ``level``, as text lines or JSON objects; returns the handler.

    Idempotent: a previous handler installed here is replaced.

    Example:
        >>> configure_logging("info", "json")  # doctest: +SKIP
    """
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter(_TEXT))
    handler.set_name("guard")
    logger = logging.getLogger("guard")
    for old in [h for h in logger.handlers if h.get_name() == "guard"]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    return handler
