"""Deterministic ids the position-monitor derives: exit orders and adopted positions.

Every id matches the ``ClientOrderId`` / ``PositionId`` pattern of the contracts,
``^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$``. When the natural form does not (too long, or a
character outside the set, e.g. the space of ``"BRK B"``), :func:`safe_id` keeps a
cleaned prefix and appends ``:`` plus 16 hex digits of the sha256 of the natural form,
so two different natural forms never share an id (the cleaning alone could merge
``a b`` and ``a_b``; the digest cannot).

Why deterministic: the exit of a position is derived from the position, not drawn at
random, so a duplicated tick, a redelivered event or a second replica evaluating the
same position all produce the *same* client order id, and order-manager (which keeps
the first order per client order id) sends one exit, never two.

Attempts: an exit that was cancelled or rejected leaves the position OPEN for a retry,
and the retry needs a new id (order-manager would treat the old one as a duplicate).
Attempt 1 is ``exit:<position_id>``; attempt ``n`` is ``exit:<position_id>:<n>``. The
attempt number is the count of exits the position has recorded, so it is as
deterministic as the id itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from typing import Final

__all__ = [
    "ID_PATTERN",
    "MAX_ID_LENGTH",
    "adoption_client_order_id",
    "exit_client_order_id",
    "exit_position_ids",
    "external_position_id",
    "is_valid_id",
    "safe_id",
]

MAX_ID_LENGTH: Final = 64

ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
"""The contracts' ``ClientOrderId`` / ``PositionId`` pattern (use with ``fullmatch``)."""

_PORTFOLIO_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.:-]")
_DIGEST_LENGTH: Final = 16
_HASHED_PREFIX: Final = MAX_ID_LENGTH - _DIGEST_LENGTH - 1  # ":" + digest


def is_valid_id(value: str) -> bool:
    """Whether ``value`` matches the client order id / position id pattern."""
    return ID_PATTERN.fullmatch(value) is not None


def safe_id(plain: str) -> str:
    """``plain`` if it is a valid id, else a cleaned prefix of it plus a digest of it."""
    if not plain:
        raise ValueError("an id cannot be built from an empty string")
    if is_valid_id(plain):
        return plain
    digest = hashlib.sha256(plain.encode()).hexdigest()[:_DIGEST_LENGTH]
    cleaned = _UNSAFE.sub("_", plain)
    if not cleaned[0].isalnum():
        cleaned = "x" + cleaned
    result = f"{cleaned[:_HASHED_PREFIX]}:{digest}"
    if not is_valid_id(result):  # pragma: no cover - guaranteed by construction
        raise AssertionError(f"generated id {result!r} does not match the id pattern")
    return result


def exit_client_order_id(position_id: str, attempt: int = 1) -> str:
    """The client order id of the ``attempt``-th exit of ``position_id``:
    ``exit:<position_id>`` for the first, ``exit:<position_id>:<attempt>`` after."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if not position_id:
        raise ValueError("position_id must not be empty")
    plain = f"exit:{position_id}" if attempt == 1 else f"exit:{position_id}:{attempt}"
    return safe_id(plain)


def exit_position_ids(client_order_id: str) -> tuple[str, ...]:
    """The positions whose exit ``client_order_id`` could be (the inverse of
    :func:`exit_client_order_id`): none for an id that is not an exit id; two for
    ``exit:a:2`` (position ``a:2``, or ``a``'s second). A position id that was hashed
    cannot be recovered (its candidates name no position)."""
    if not client_order_id.startswith("exit:"):
        return ()
    rest = client_order_id[len("exit:") :]
    found: list[str] = []
    if rest and exit_client_order_id(rest) == client_order_id:
        found.append(rest)
    head, _, attempt = rest.rpartition(":")
    if (
        head
        and attempt.isdigit()
        and int(attempt) >= 2
        and exit_client_order_id(head, int(attempt)) == client_order_id
    ):
        found.append(head)
    return tuple(found)


def external_position_id(
    portfolio_id: str,
    session_date: dt.date,
    symbol: str,
    snapshot_id: uuid.UUID | None = None,
) -> str:
    """The id of a position adopted from the broker (held there, unknown to us):
    ``ext-<portfolio>-<yyyymmdd>-<symbol>[-<first 8 hex of the snapshot id>]``.

    The snapshot part keeps a second adoption in the same symbol and session (the
    first was closed, then the symbol appeared at the broker again) from colliding
    with the first, while two replicas comparing the same snapshot agree on the id.
    """
    if _PORTFOLIO_PATTERN.fullmatch(portfolio_id) is None:
        raise ValueError(f"portfolio_id {portfolio_id!r} is not a portfolio slug")
    if not symbol:
        raise ValueError("symbol must not be empty")
    plain = f"ext-{portfolio_id}-{session_date:%Y%m%d}-{symbol}"
    if snapshot_id is not None:
        plain += f"-{snapshot_id.hex[:8]}"
    return safe_id(plain)


def adoption_client_order_id(position_id: str) -> str:
    """The stand-in entry client order id of an adopted position: ``adopt:<position_id>``.

    An adopted position has no entry order of ours, but the contracts (and the
    ``positions`` table) give every position one; this id is never sent to IB, and no
    execution of a real order can carry it (ibflow's own ids never start ``adopt:``).
    """
    if not position_id:
        raise ValueError("position_id must not be empty")
    return safe_id(f"adopt:{position_id}")
