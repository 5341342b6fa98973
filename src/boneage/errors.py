"""User-facing error types.

Anything raised as a :class:`BoneAgeError` is a problem with what the user gave us (a file,
a value, a config), not a bug: the CLI prints its message on one line and exits non-zero
without a traceback. Messages name the offending file or value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path


class BoneAgeError(Exception):
    """Base class for errors caused by user input rather than by a bug."""


class InputError(BoneAgeError, ValueError):
    """A file or value that cannot be used; the message names it and the problem."""

    def __init__(self, problem: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class SexUnknown(InputError):
    """A model that needs the sex got none: none was given and the file has no sex tag.

    The message ends with how to give it, which each front end words in its own terms
    (:meth:`telling`): the API's argument, the CLI's options, the service's form field.
    """

    def __init__(self, path: str | Path | None = None, how: str = "pass sex='M' or 'F'"):
        self.how = how
        super().__init__(f"sex is unknown: the file has no sex tag and none was given; {how}", path)

    def telling(self, how: str) -> "SexUnknown":
        """The same error, ending with ``how`` to give the sex."""
        return SexUnknown(self.path, how)


class ConfigError(BoneAgeError, ValueError):
    """A recipe or override that is not valid."""


def unknown_name(kind: str, name: str, valid: list[str]) -> ConfigError:
    """``ConfigError`` for a name missing from a registry: suggests the closest, lists all."""
    import difflib

    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown {kind} {name!r}{hint}; valid names: {', '.join(sorted(valid))}")


class QualityRefusal(BoneAgeError):
    """The image was read but is not a hand radiograph the model can assess (a photograph,
    text, a CT slice, an unsure orientation, ...). The CLI exits with status 3 for it, apart
    from 2 for unreadable files; ``--force`` (``force=True``) assesses it anyway."""

    def __init__(self, reason: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"not assessed: {reason}" if path is None else f"{path}: not assessed: {reason}")
