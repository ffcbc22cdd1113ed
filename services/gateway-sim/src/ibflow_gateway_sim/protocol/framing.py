"""TWS socket framing: the ``API\\0`` handshake, length-prefixed NUL-separated messages.

Spec: ``docs/tws-protocol.md`` section 1. Every message after the handshake, in both
directions, is ``uint32_be(len(payload)) + payload`` where ``payload`` is the fields, each
terminated by a NUL byte (including the last one). Field 1 is the message id.
"""

from __future__ import annotations

import asyncio
import math
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

SERVER_VERSION: Final = 176
"""The one server version the simulator speaks (the only one both clients decode identically)."""
MIN_CLIENT_VERSION: Final = 157
"""Lowest client ``MinClientVersion`` the simulator is known to serve (both clients send 157)."""
API_PREFIX: Final = b"API\0"
"""The 4 bytes every client connection starts with."""
MAX_FRAME_SIZE: Final = 16 * 1024 * 1024
"""Largest accepted payload (client→server message or handshake) in bytes."""
MAX_HANDSHAKE_SIZE: Final = 1024
"""Largest accepted handshake version string (``v157..178 +PACEAPI`` is 18 bytes)."""

Field = str | int | float | Decimal | bool | None
"""A value :func:`encode_message` can put on the wire."""

_LEN = struct.Struct(">I")
_HELLO = re.compile(r"v(\d+)\.\.(\d+)(?: (.*))?", re.DOTALL)


class HandshakeError(Exception):
    """The client's first bytes are not a usable TWS API handshake."""


class FrameError(Exception):
    """A message frame cannot be accepted (e.g. larger than :data:`MAX_FRAME_SIZE`)."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """The parsed client handshake ``vMIN..MAX[ OPTIONS]``."""

    min_version: int
    max_version: int
    options: str = ""
    """Connect options after the version range, e.g. ``"+PACEAPI"`` (``""`` if none)."""


async def read_handshake(reader: asyncio.StreamReader) -> ClientHello:
    """Read ``b"API\\0" + uint32_be(n) + b"vMIN..MAX[ OPTIONS]"`` (not NUL-terminated).

    Raises :class:`HandshakeError` for a wrong prefix, an implausible length, a version
    string that does not parse, or a connection closed part-way.
    """
    try:
        prefix = await reader.readexactly(len(API_PREFIX))
    except asyncio.IncompleteReadError as exc:
        raise HandshakeError(
            f"connection closed during the handshake after {len(exc.partial)} bytes"
        ) from exc
    if prefix != API_PREFIX:
        raise HandshakeError(f"expected the API\\0 prefix, got {prefix!r}")
    try:
        (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
        if not 0 < size <= MAX_HANDSHAKE_SIZE:
            raise HandshakeError(f"handshake length {size} outside 1..{MAX_HANDSHAKE_SIZE}")
        raw = await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise HandshakeError("connection closed during the handshake (truncated)") from exc
    return parse_hello(raw)


def parse_hello(raw: bytes) -> ClientHello:
    """Parse the handshake version string ``vMIN..MAX[ OPTIONS]`` (see :func:`read_handshake`)."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise HandshakeError(f"handshake version string is not ASCII: {raw!r}") from exc
    match = _HELLO.fullmatch(text)
    if match is None:
        raise HandshakeError(f"handshake version string {text!r} is not 'vMIN..MAX[ OPTIONS]'")
    low, high = int(match[1]), int(match[2])
    if low > high:
        raise HandshakeError(f"handshake version range v{low}..{high} is empty")
    return ClientHello(low, high, (match[3] or "").strip())


def negotiate(hello: ClientHello) -> int:
    """Return :data:`SERVER_VERSION` if the client's range contains it, else raise.

    Raises :class:`HandshakeError` ``"client supports vA..B, simulator speaks 176"``.
    """
    if hello.min_version <= SERVER_VERSION <= hello.max_version:
        return SERVER_VERSION
    raise HandshakeError(
        f"client supports v{hello.min_version}..{hello.max_version}, "
        f"simulator speaks {SERVER_VERSION}"
    )


async def read_message(reader: asyncio.StreamReader, max_size: int = MAX_FRAME_SIZE) -> list[str]:
    """Read one length-prefixed message and return its fields (``fields[0]`` is the id).

    The payload is split like the clients do (``payload.split("\\0")``, trailing empty
    element dropped). :class:`asyncio.IncompleteReadError` propagates at EOF; a frame
    larger than ``max_size`` or an empty one raises :class:`FrameError`.
    """
    (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    if size > max_size:
        raise FrameError(f"frame of {size} bytes exceeds the {max_size}-byte limit")
    if size == 0:
        raise FrameError("empty frame")
    return split_payload(await reader.readexactly(size))


def split_payload(payload: bytes) -> list[str]:
    """Split a message payload (without the length prefix) into its fields."""
    fields = payload.decode(errors="backslashreplace").split("\0")
    if fields[-1] == "":
        fields.pop()
    return fields


def split_frame(frame: bytes) -> list[str]:
    """Split one complete frame (length prefix included) into its fields; checks the length."""
    if len(frame) < _LEN.size:
        raise FrameError(f"frame of {len(frame)} bytes has no length prefix")
    (size,) = _LEN.unpack_from(frame)
    if size != len(frame) - _LEN.size:
        raise FrameError(f"length prefix says {size} bytes, frame has {len(frame) - _LEN.size}")
    return split_payload(frame[_LEN.size :])


def encode_field(value: Field) -> str:
    """Render one value the way TWS does.

    ``None`` → ``''``; ``bool`` → ``'1'``/``'0'``; ``Decimal`` → plain notation without
    exponent (``Decimal('1E+2')`` → ``'100'``); a non-finite ``float``/``Decimal`` → ``''``
    (the clients' ``float()`` cannot parse ``'Infinite'``); other floats → ``str(f)``;
    ``int`` → ``str(i)``. Text containing NUL raises :class:`ValueError`.
    """
    # the simulator sends dozens of fields per message: plain text and ints first
    if type(value) is int:
        return str(value)
    if type(value) is str and "\0" not in value:
        return value
    return _encode_other(value)


def _encode_other(value: Field) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Decimal):
        if not value.is_finite():
            return ""
        return format(value, "f")
    if isinstance(value, float):
        return str(value) if math.isfinite(value) else ""
    text = str(value)
    if "\0" in text:
        raise ValueError(f"field {text!r} contains a NUL byte (the field separator)")
    return text


def encode_message(*fields: Field) -> bytes:
    """Encode ``fields`` as one frame: length prefix + every field NUL-terminated."""
    if not fields:
        raise ValueError("a message needs at least one field (the message id)")
    payload = ("\0".join(map(encode_field, fields)) + "\0").encode()
    return _LEN.pack(len(payload)) + payload


def handshake_reply(version: int = SERVER_VERSION, when: datetime | None = None) -> bytes:
    """The server's handshake answer: exactly 2 fields, version and connection time.

    The time is rendered ``YYYYMMDD HH:MM:SS UTC`` (``when`` defaults to now).
    """
    moment = (when or datetime.now(UTC)).astimezone(UTC)
    return encode_message(version, moment.strftime("%Y%m%d %H:%M:%S UTC"))
