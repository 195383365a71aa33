"""A name -> function registry.

Why: configs name algorithms by string ("zppo", "ppo_clip", "jsd"); a registry keeps one function per
algorithm and one obvious lookup, instead of `if name == ...` chains spread over the trainer.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

F = TypeVar("F", bound=Callable)


class UnknownNameError(KeyError):
    """Raised by `Registry.get` for a name nobody registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would repr() the message and wrap it in quotes
        return str(self.args[0])


class Registry(Generic[F]):
    """Maps names to functions of one kind (e.g. "advantage estimator").

    `kind` only serves error messages, so a typo in a config says what was being looked up.
    Registering a name twice is an error: silently replacing an algorithm is a bug magnet.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._fns: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: `@REG.register("name")` stores the function and returns it unchanged."""

        def deco(fn: F) -> F:
            if name in self._fns:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._fns[name] = fn
            return fn

        return deco

    def get(self, name: str) -> F:
        try:
            return self._fns[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or '(none)'}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._fns)

    def __contains__(self, name: object) -> bool:
        return name in self._fns

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"
