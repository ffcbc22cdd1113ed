"""Plug your own code into the morning entry: the :class:`Strategy` protocol and its registry.

A strategy produces a session's :class:`~ibflow.contracts.recommendations.Recommendation`
items for a portfolio. At ``session.morning_entry`` the order-manager asks every
configured strategy, once per enabled portfolio, records what it returns (source
``strategy:<name>``; a symbol already recommended for that portfolio and session, by
the API or another strategy, keeps its first recommendation), then sizes and submits
all of the session's recommendations together (:mod:`ibflow_order_manager.entry`).

Writing one: any object with a ``name`` and an async ``recommend`` method will do::

    # my_strategies/gap.py
    from datetime import date
    from decimal import Decimal

    from ibflow.contracts import Recommendation


    class GapUp:
        name = "gap-up"

        async def recommend(self, portfolio_id: str, session_date: date) -> list[Recommendation]:
            if portfolio_id != "demo":
                return []  # asked for every enabled portfolio: pick yours
            return [
                Recommendation(
                    symbol="AAPL",
                    allocation=Decimal("0.10"),  # 10 % of the portfolio's equity
                    stop_loss=Decimal("180"),
                    take_profit=Decimal("200"),
                )
            ]

Plugging it in: make the module importable by the order-manager (install it into the
same environment, or put its directory on ``PYTHONPATH``) and list it in the
order-manager's ``strategies`` setting as ``"module:attribute"`` import paths (a JSON
list in the environment)::

    IBFLOW_STRATEGIES='["my_strategies.gap:GapUp"]'

The attribute may be a strategy object, a class (instantiated without arguments), or
a function without arguments returning a strategy. :func:`load_strategies` imports
and checks every path when the order-manager starts: a path that cannot be imported,
or an object that is not a strategy, stops the start with a :class:`StrategyLoadError`
naming the path and the reason.

Rules a strategy should follow:

* ``name`` is a short slug (letters, digits, ``_``, ``.``, ``-``; at most 64
  characters), unique among the configured strategies;
* ``recommend`` returns quickly (it is given a time limit, 30 s by default) and may do
  I/O (it runs on the order-manager's event loop: never block it);
* it is called again when the session event is re-fired or redelivered, so it should
  give the same answer for the same session; what it returned the first time stays
  recorded either way, and nothing is ever bought twice (entry client order ids are
  deterministic);
* an exception, a time-out or an item that is not a ``Recommendation`` is logged and
  costs only that strategy's recommendations for that portfolio, never the session.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import date
from typing import Final, Protocol, cast, runtime_checkable

from ibflow.contracts.recommendations import Recommendation

__all__ = [
    "Strategy",
    "StrategyLoadError",
    "StrategyRegistry",
    "load_strategies",
    "load_strategy",
    "strategy_source",
]

_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PATH: Final = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@runtime_checkable
class Strategy(Protocol):
    """Produces the recommendations of a portfolio's session (see the module docstring)."""

    name: str
    """A short unique slug; recommendations are recorded with source ``strategy:<name>``."""

    async def recommend(self, portfolio_id: str, session_date: date) -> Sequence[Recommendation]:
        """The recommendations for ``portfolio_id``'s session of ``session_date`` (may be empty)."""
        ...


def strategy_source(strategy: Strategy) -> str:
    """``strategy:<name>``, the ``source`` its recommendations are recorded with."""
    return f"strategy:{strategy.name}"


class StrategyLoadError(ValueError):
    """A configured strategy path cannot be used; the message names the path and why."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"strategy {path!r}: {reason}")


def load_strategy(path: str) -> Strategy:
    """Import ``"module:attribute"`` and return the strategy it names.

    The attribute (dots allowed: ``module:Class.attr``) may be a strategy object, a
    class instantiated without arguments, or a function without arguments returning a
    strategy. Raises :class:`StrategyLoadError` naming ``path`` when it cannot be
    imported, built, or does not satisfy :class:`Strategy`.
    """
    text = path.strip()
    if not _PATH.match(text):
        raise StrategyLoadError(path, "expected 'module:attribute', e.g. 'my_pkg.mod:MyStrategy'")
    module_name, _, attribute = text.partition(":")
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:
        raise StrategyLoadError(path, f"cannot import module {module_name!r}: {exc!r}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise StrategyLoadError(
                path, f"{module_name!r} has no attribute {attribute!r}"
            ) from None
    return _check(path, _instantiate(path, target))


def _instantiate(path: str, target: object) -> object:
    if inspect.isclass(target):
        try:
            return target()
        except Exception as exc:
            raise StrategyLoadError(
                path, f"cannot instantiate {target.__name__} without arguments: {exc!r}"
            ) from exc
    if isinstance(target, Strategy) or not callable(target):
        return target
    try:
        return target()
    except Exception as exc:
        raise StrategyLoadError(path, f"calling the factory failed: {exc!r}") from exc


def _check(path: str, strategy: object) -> Strategy:
    """``strategy`` if it satisfies :class:`Strategy`, else :class:`StrategyLoadError`."""
    name = getattr(strategy, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise StrategyLoadError(
            path,
            f"{type(strategy).__name__} needs a 'name' slug (letters, digits, _ . -, at most "
            f"64 characters), got {name!r}",
        )
    recommend = getattr(strategy, "recommend", None)
    if recommend is None or not inspect.iscoroutinefunction(recommend):
        raise StrategyLoadError(
            path,
            f"{type(strategy).__name__} needs an 'async def recommend(self, portfolio_id, "
            "session_date)' method",
        )
    try:
        inspect.signature(recommend).bind("portfolio", date(2000, 1, 3))
    except TypeError as exc:
        raise StrategyLoadError(
            path, f"recommend cannot be called as recommend(portfolio_id, session_date): {exc}"
        ) from None
    return cast("Strategy", strategy)


class StrategyRegistry:
    """The configured strategies, in configuration order, names unique."""

    def __init__(self, strategies: Iterable[Strategy] = ()) -> None:
        self._strategies: tuple[Strategy, ...] = tuple(strategies)
        seen: set[str] = set()
        for strategy in self._strategies:
            _check(repr(strategy), strategy)
            if strategy.name in seen:
                raise StrategyLoadError(
                    repr(strategy), f"another strategy is already named {strategy.name!r}"
                )
            seen.add(strategy.name)

    @classmethod
    def from_paths(cls, paths: Iterable[str]) -> StrategyRegistry:
        """Import every ``"module:attribute"`` path (the ``strategies`` setting).

        Raises :class:`StrategyLoadError` for the first path that cannot be used, or
        whose strategy's name is already taken by an earlier path.
        """
        strategies: list[Strategy] = []
        names: dict[str, str] = {}
        for path in paths:
            strategy = load_strategy(path)
            if strategy.name in names:
                raise StrategyLoadError(
                    path, f"name {strategy.name!r} is already used by {names[strategy.name]!r}"
                )
            names[strategy.name] = path
            strategies.append(strategy)
        return cls(strategies)

    @property
    def names(self) -> tuple[str, ...]:
        """The strategies' names, in order."""
        return tuple(strategy.name for strategy in self._strategies)

    def get(self, name: str) -> Strategy | None:
        """The strategy named ``name``, or ``None``."""
        return next((s for s in self._strategies if s.name == name), None)

    def __len__(self) -> int:
        return len(self._strategies)

    def __iter__(self) -> Iterator[Strategy]:
        return iter(self._strategies)

    def __repr__(self) -> str:
        return f"StrategyRegistry({list(self.names)!r})"


def load_strategies(paths: Iterable[str]) -> StrategyRegistry:
    """:meth:`StrategyRegistry.from_paths`: the registry of the ``strategies`` setting."""
    return StrategyRegistry.from_paths(paths)
