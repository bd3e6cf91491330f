"""Pluggable splitters: what cuts a choice's text into the units (sentences) the guard judges.

A request picks one by name with ``guard.split`` (:class:`guard.options.GuardOptions`); clients choose only
among the splitters installed on the server, never send code. Built in:

* ``sentences`` (the default): :class:`guard.sentences.SentenceSplitter`, terminators of many scripts;
* ``lines``: :class:`guard.sentences.LineSplitter`, line breaks only.

More come from installed packages, as entry points of the group :data:`ENTRY_POINT_GROUP` whose object is a
factory (a class, or a function of no arguments) returning a :class:`TextSplitter`, or from the Python API
through :func:`register_splitter`. A splitter gets every generated token as ``(position, text)`` in order and
returns the :class:`guard.sentences.Sentence` objects each token closed; the texts must partition the text
exactly (offsets and token positions as :class:`~guard.sentences.Sentence` documents them).

Example (``pyproject.toml`` of a plugin package)::

    [project.entry-points."guard.splitters"]
    clauses = "my_package.splitting:ClauseSplitter"
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Protocol

from guard.errors import ConfigError
from guard.sentences import LineSplitter, Sentence, SentenceSplitter

__all__ = ["DEFAULT_SPLITTER", "ENTRY_POINT_GROUP", "TextSplitter", "SplitterFactory", "register_splitter",
           "splitter_factory", "splitter_names"]

#: the entry-point group installed packages register splitters in
ENTRY_POINT_GROUP = "guard.splitters"
#: the splitter a request gets unless it names another
DEFAULT_SPLITTER = "sentences"


class TextSplitter(Protocol):
    """What the guard feeds a choice's tokens to (:class:`guard.sentences.SentenceSplitter` is one)."""

    def feed(self, position: int, text: str) -> list[Sentence]:
        """Add one token; return the sentences it closed."""

    def finish(self) -> list[Sentence]:
        """Close the remaining text as the last sentence (nothing when none remains)."""


SplitterFactory = Callable[[], TextSplitter]

_REGISTERED: dict[str, SplitterFactory] = {"sentences": SentenceSplitter, "lines": LineSplitter}
_PLUGINS_LOADED = False


def register_splitter(name: str, factory: SplitterFactory) -> None:
    """Make ``factory`` (called once per choice) available as ``guard.split = name``.

    Raises:
        ConfigError: ``name`` is empty, or already taken by another factory.
    """
    if not name or not name.strip():
        raise ConfigError(f"splitter name {name!r} is empty; give the name requests will use in guard.split")
    taken = _REGISTERED.get(name)
    if taken is not None and taken is not factory:
        raise ConfigError(f"splitter name {name!r} is already taken by {taken!r}; register {factory!r} under "
                          "another name")
    _REGISTERED[name] = factory


def _load_plugins() -> None:
    """Register the installed packages' splitters (once per process)."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            factory = point.load()
        except Exception as exc:  # a broken plugin must not take the built-in splitters down with it
            raise ConfigError(f"the splitter {point.name!r} of entry point {point.value!r} ({ENTRY_POINT_GROUP}) "
                              f"failed to load: {exc}; fix or uninstall the package that provides it") from exc
        if not callable(factory):
            raise ConfigError(f"the splitter {point.name!r} of entry point {point.value!r} is not a factory "
                              f"(a class or a function of no arguments); fix the package that provides it")
        register_splitter(point.name, factory)


def splitter_names() -> tuple[str, ...]:
    """The names a request may give in ``guard.split``, built-in first."""
    _load_plugins()
    return tuple(_REGISTERED)


def splitter_factory(name: str) -> SplitterFactory:
    """The factory of the splitter called ``name``.

    Raises:
        ConfigError: no splitter has that name (the message lists the installed ones).
    """
    _load_plugins()
    try:
        return _REGISTERED[name]
    except KeyError:
        known = ", ".join(repr(n) for n in _REGISTERED)
        raise ConfigError(f"no splitter is called {name!r}; installed: {known} (more come from packages with a "
                          f"{ENTRY_POINT_GROUP!r} entry point)") from None
