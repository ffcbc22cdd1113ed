"""The envelope every ibflow message carries, and the base classes of the catalogue.

Rules for every contract (checked by ``shared/tests/unit/test_contracts.py`` and
``test_schemas.py``):

* frozen pydantic v2 models; unknown fields are ignored (tolerant reader), so a
  producer may add fields without breaking older consumers;
* money, prices and quantities are :class:`~decimal.Decimal` (:data:`Money`,
  :data:`Quantity`), serialised as JSON strings; floats are refused on input;
* timestamps are timezone-aware UTC;
* commands are imperative (``SubmitOrder``), events past tense (``OrderRejected``);
* a message whose domain gives it a natural identity (IB's ``execId``, our
  ``client_order_id``, a session occurrence) says so in :meth:`Envelope.dedupe_key`;
  publishers send :meth:`Envelope.msg_id` as ``Nats-Msg-Id`` and stores use it as
  the idempotency key, so a re-published fact is recognised as the same fact;
* schemas only grow: new fields are optional; anything else is a new version
  (see :func:`ibflow.contracts.schemas.breaking_changes`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware")
    return value.astimezone(UTC)


def _refuse_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("a float is not exact; send a decimal string (or an int)")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_require_utc)]
"""A timezone-aware timestamp, normalised to UTC."""

Money = Annotated[
    Decimal,
    BeforeValidator(_refuse_float),
    Field(allow_inf_nan=False),
    PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json"),
    WithJsonSchema(
        {"type": "string", "format": "decimal", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"},
        mode="serialization",
    ),
]
"""An amount of money or a price: Decimal in Python, a plain decimal string on the wire
(``"101.25"``, never exponent notation, never a float)."""

Quantity = Money
"""A number of shares or contracts (fractional allowed): Decimal, a string on the wire."""

PositiveMoney = Annotated[Money, Field(gt=0)]
"""A price or amount that must be above zero."""

PositiveQuantity = Annotated[Quantity, Field(gt=0)]
"""A quantity that must be above zero (order sizes)."""

PortfolioId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
"""A portfolio's slug (``"demo"``); usable as a subject token, never starting with ``_``."""

Symbol = Annotated[str, Field(min_length=1, max_length=32)]
"""A ticker as IB spells it (``"AAPL"``, ``"BRK B"``)."""

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"

ClientOrderId = Annotated[str, Field(pattern=_ID_PATTERN)]
"""Our id of an order, chosen by whoever submits it (the idempotency key); IB's ``orderRef``."""

PositionId = Annotated[str, Field(pattern=_ID_PATTERN)]
"""Our id of a day-trade position, chosen with its entry order."""

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
"""An ISO 4217 currency code (``"USD"``)."""

Actor = Annotated[str, Field(min_length=1, max_length=128)]
"""Who asked for something: a user (``"user:alice"``) or a service (``"position-monitor"``)."""


def canonical_decimal(value: Decimal) -> str:
    """``value`` as a canonical string for ids: ``Decimal("10.0")`` and ``Decimal("10")`` agree."""
    return format(value.normalize(), "f")


class Contract(BaseModel):
    """Base of every message model: frozen and tolerant of unknown fields.

    Attribute docstrings become field descriptions in the published JSON Schemas.
    """

    model_config = ConfigDict(
        frozen=True, extra="ignore", populate_by_name=True, use_attribute_docstrings=True
    )

    def to_json(self) -> bytes:
        """Serialise to the wire format (UTF-8 JSON)."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        """Parse from the wire format; raises :class:`pydantic.ValidationError` on bad input."""
        return cls.model_validate_json(data)


class Envelope(Contract):
    """Fields carried by every message on the bus.

    ``event_id`` is unique per message instance; ``correlation_id`` ties together
    everything caused by one original request (an API call, a session event), and
    ``causation_id`` is the ``event_id`` of the message that directly caused this one.
    """

    SCHEMA_VERSION: ClassVar[int] = 1

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    """Unique per message instance."""
    ts_event: UtcDatetime = Field(default_factory=utc_now)
    """When the fact happened or the request was made (the broker's time where it gives one)."""
    ts_init: UtcDatetime = Field(default_factory=utc_now)
    """When this message object was created."""
    correlation_id: uuid.UUID | None = None
    """Shared by everything that follows from one original request or session event."""
    causation_id: uuid.UUID | None = None
    """The ``event_id`` of the message that directly caused this one."""
    schema_version: int = 1
    """The major version of this message's schema (the ``v1`` in its subject)."""

    @classmethod
    def type_name(cls) -> str:
        """The message's name in the catalogue (its class name)."""
        return cls.__name__

    def caused(self) -> dict[str, uuid.UUID | None]:
        """Envelope fields for a message caused by this one: same correlation, this as cause."""
        return {
            "correlation_id": self.correlation_id or self.event_id,
            "causation_id": self.event_id,
        }

    def dedupe_key(self) -> str | None:
        """The message's identity from its domain, or ``None`` when the domain gives none.

        Two messages with the same key state the same fact (or repeat the same request)
        and must be processed once. Overridden by messages that have such an identity;
        the key depends only on payload fields, never on ``event_id`` or timestamps.
        """
        return None

    def msg_id(self) -> str:
        """The id to publish with (``Nats-Msg-Id``): :meth:`dedupe_key`, else ``event_id``."""
        return self.dedupe_key() or str(self.event_id)


class Command(Envelope):
    """A request to do something (imperative name). May be refused."""


class Event(Envelope):
    """A fact that has happened (past-tense name). Never refused, only recorded."""
