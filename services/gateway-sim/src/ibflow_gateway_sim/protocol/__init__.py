"""The TWS socket protocol at server version 176, as ib_async 2.1.0 / ib_insync 0.9.86 speak it.

Pure (no I/O besides reading from an :class:`asyncio.StreamReader`), no simulator state.

- :mod:`.framing`: handshake, length-prefixed frames, field encoding.
- :mod:`.ids`: message ids (``IN_*`` client→server, ``OUT_*`` server→client), tick types.
- :mod:`.requests`: :func:`decode_request` → frozen request dataclasses.
- :mod:`.responses`: one encoder per server→client message, each returning a frame.
- :mod:`.errors`: IB error codes/texts and ready-made notice frames.

Typical session::

    hello = await read_handshake(reader)
    version = negotiate(hello)  # HandshakeError → close
    writer.write(handshake_reply(version, datetime.now(UTC)))
    while True:
        request = decode_request(await read_message(reader))  # DecodeError → log/answer 320
        ...
"""

from ibflow_gateway_sim.protocol import errors, ids, responses
from ibflow_gateway_sim.protocol.framing import (
    MAX_FRAME_SIZE,
    MIN_CLIENT_VERSION,
    SERVER_VERSION,
    ClientHello,
    Field,
    FrameError,
    HandshakeError,
    encode_field,
    encode_message,
    handshake_reply,
    negotiate,
    read_handshake,
    read_message,
    split_frame,
    split_payload,
)
from ibflow_gateway_sim.protocol.requests import (
    CancelAccountSummary,
    CancelAccountUpdatesMulti,
    CancelHistoricalData,
    CancelMktData,
    CancelOrder,
    CancelPositions,
    ComboLegSpec,
    ContractSpec,
    DecodeError,
    DeltaNeutralContractSpec,
    ExecutionFilter,
    MktDataComboLeg,
    OrderConditionSpec,
    OrderFields,
    PlaceOrder,
    ReqAccountSummary,
    ReqAccountUpdates,
    ReqAccountUpdatesMulti,
    ReqAllOpenOrders,
    ReqAutoOpenOrders,
    ReqCompletedOrders,
    ReqContractDetails,
    ReqCurrentTime,
    ReqExecutions,
    ReqGlobalCancel,
    ReqHistoricalData,
    ReqIds,
    ReqMarketDataType,
    ReqMktData,
    ReqOpenOrders,
    ReqPositions,
    Request,
    StartApi,
    UnknownRequest,
    decode_request,
)
from ibflow_gateway_sim.protocol.responses import (
    BarView,
    ContractDetailsView,
    ExecutionView,
    OrderStateView,
)

__all__ = [
    "MAX_FRAME_SIZE",
    "MIN_CLIENT_VERSION",
    "SERVER_VERSION",
    "BarView",
    "CancelAccountSummary",
    "CancelAccountUpdatesMulti",
    "CancelHistoricalData",
    "CancelMktData",
    "CancelOrder",
    "CancelPositions",
    "ClientHello",
    "ComboLegSpec",
    "ContractDetailsView",
    "ContractSpec",
    "DecodeError",
    "DeltaNeutralContractSpec",
    "ExecutionFilter",
    "ExecutionView",
    "Field",
    "FrameError",
    "HandshakeError",
    "MktDataComboLeg",
    "OrderConditionSpec",
    "OrderFields",
    "OrderStateView",
    "PlaceOrder",
    "ReqAccountSummary",
    "ReqAccountUpdates",
    "ReqAccountUpdatesMulti",
    "ReqAllOpenOrders",
    "ReqAutoOpenOrders",
    "ReqCompletedOrders",
    "ReqContractDetails",
    "ReqCurrentTime",
    "ReqExecutions",
    "ReqGlobalCancel",
    "ReqHistoricalData",
    "ReqIds",
    "ReqMarketDataType",
    "ReqMktData",
    "ReqOpenOrders",
    "ReqPositions",
    "Request",
    "StartApi",
    "UnknownRequest",
    "decode_request",
    "encode_field",
    "encode_message",
    "errors",
    "handshake_reply",
    "ids",
    "negotiate",
    "read_handshake",
    "read_message",
    "responses",
    "split_frame",
    "split_payload",
]
