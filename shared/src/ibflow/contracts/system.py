"""Messages about the bus itself."""

from __future__ import annotations

from pydantic import Field

from ibflow.contracts.base import Event


class MessageDeadLettered(Event):
    """A consumer gave up on a message: rejected, undecodable, or out of deliveries.

    Carries the reason and the original bytes (base64) so it can be inspected and replayed.
    """

    consumer: str
    stream: str
    subject: str
    stream_sequence: int
    delivery_count: int
    reason: str
    original_msg_id: str | None = None
    payload_b64: str
    headers: dict[str, str] = Field(default_factory=dict)

    def dedupe_key(self) -> str:
        """``dlq:<consumer>:<stream>:<stream_sequence>``: dead-lettered once per consumer."""
        return f"dlq:{self.consumer}:{self.stream}:{self.stream_sequence}"
