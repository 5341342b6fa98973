"""One registry mechanism for everything a recipe names by string.

Models, losses, transforms, optimisers, schedules, aggregations and robustness preparations
each live in a :class:`Registry`. Registration is a decorator; building by name turns a typo
into a one-line :class:`~boneage.errors.ConfigError` that suggests the closest name and lists
the valid ones, and turns a bad constructor argument into a one-line error naming the recipe
key it came from.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Generic, Iterator, TypeVar

from boneage.errors import ConfigError, unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """Named builders of one kind (``"model"``, ``"loss"``, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | Callable | None = None) -> Callable:
        """Decorator: ``@REG.register`` (under the function's own name) or ``@REG.register("x")``."""
        if callable(name):  # used bare: @REG.register
            return self._add(name.__name__, name)

        def deco(obj: T) -> T:
            return self._add(name or obj.__name__, obj)
        return deco

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name`` (for objects that are not defined by a ``def``)."""
        return self._add(name, obj)

    def _add(self, name: str, obj: T) -> T:
        if name in self._items:
            raise RuntimeError(f"{self.kind} {name!r} registered twice")
        self._items[name] = obj
        return obj

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def get(self, name: str) -> T:
        """The registered object; an unknown name is a :class:`ConfigError` listing valid ones."""
        if not isinstance(name, str) or name not in self._items:
            raise unknown_name(self.kind, str(name), list(self._items))
        return self._items[name]

    def create(self, name: str, /, *, where: str | None = None, strict: bool = True, **options: Any):
        """Build ``name`` with ``options``.

        An option the builder does not take, or a value it rejects (``TypeError`` /
        ``ValueError``), becomes a :class:`ConfigError` naming ``where`` (the recipe key,
        e.g. ``"model.options"``) and the problem. ``strict`` checks option names against
        the builder's signature first, so the message lists the allowed ones.
        """
        builder = self.get(name)
        label = f"{where or self.kind} {name!r}"
        if strict:
            allowed = _parameters(builder)
            if allowed is not None:
                unknown = sorted(set(options) - set(allowed))
                if unknown:
                    raise ConfigError(f"{label} has no parameter(s) {unknown}; allowed: {allowed}")
        try:
            return builder(**options)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{label}: {exc}") from exc

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self):
        return self._items.items()

    def values(self):
        return self._items.values()


def _parameters(builder: Callable) -> list[str] | None:
    """Keyword parameters a builder accepts, or None when it takes ``**kwargs``."""
    target = builder.__init__ if inspect.isclass(builder) else builder
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.name != "self"
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
