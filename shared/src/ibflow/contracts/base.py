"""The envelope every ibflow message carries, and the base classes of the catalogue.

Rules for every contract (checked by ``shared/tests/unit/test_schemas.py``):

* frozen pydantic v2 models; unknown fields are ignored (tolerant reader), so a
  producer may add fields without breaking older consumers;
* money and quantities are :class:`~decimal.Decimal`, serialised as JSON strings;
* timestamps are timezone-aware UTC;
* commands are imperative (``SubmitOrder``), events past tense (``OrderFilled``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_require_utc)]
"""A timezone-aware timestamp, normalised to UTC."""

Money = Annotated[
    Decimal,
    Field(allow_inf_nan=False),
    PlainSerializer(lambda value: str(value), return_type=str, when_used="json"),
]
"""An amount of money: Decimal in Python, a string on the wire (never a float)."""

Quantity = Money
"""A number of shares or contracts (fractional allowed): Decimal, a string on the wire."""


class Contract(BaseModel):
    """Base of every message model: frozen and tolerant of unknown fields."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class Envelope(Contract):
    """Fields carried by every message on the bus.

    ``event_id`` is unique per message instance; ``correlation_id`` ties together
    everything caused by one original request (an API call, a session event), and
    ``causation_id`` is the ``event_id`` of the message that directly caused this one.
    """

    SCHEMA_VERSION: ClassVar[int] = 1

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    ts_event: UtcDatetime = Field(default_factory=utc_now)
    ts_init: UtcDatetime = Field(default_factory=utc_now)
    correlation_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None
    schema_version: int = 1

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

    def to_json(self) -> bytes:
        """Serialise to the wire format (UTF-8 JSON)."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        """Parse from the wire format; raises :class:`pydantic.ValidationError` on bad input."""
        return cls.model_validate_json(data)


class Command(Envelope):
    """A request to do something (imperative name). May be refused."""


class Event(Envelope):
    """A fact that has happened (past-tense name). Never refused, only recorded."""
