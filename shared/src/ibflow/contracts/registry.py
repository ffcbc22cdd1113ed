"""The message catalogue: every message type, where it travels, who sends and who reads it.

One entry per type. ``subject`` is a pattern whose ``{placeholders}`` are single tokens
(``ibflow.evt.v1.order.status.{portfolio}``, built with :mod:`ibflow.bus.subjects`); it is
``None`` only for replies, which go to the requester's reply inbox. ``stream`` is the
JetStream stream that persists the subject, or ``None`` for core NATS (commands, replies
and market data are never persisted).
``docs/events.md`` and ``shared/schemas/v1`` are generated from this catalogue.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from ibflow.bus import subjects as s
from ibflow.bus.specs import StreamSpec
from ibflow.contracts.account import (
    AccountValuesReported,
    BrokerPositionReported,
    PortfolioChanged,
)
from ibflow.contracts.api_keys import (
    ApiKeyCreated,
    ApiKeyRevoked,
    ApiKeysListed,
    CreateApiKey,
    ListApiKeys,
    RevokeApiKey,
)
from ibflow.contracts.base import Command, Contract, Event
from ibflow.contracts.control import (
    HaltTrading,
    ResumeTrading,
    RiskLimitBreached,
    TradingHalted,
    TradingResumed,
)
from ibflow.contracts.execution import CommissionReported, ExecutionReported, OrderStatusChanged
from ibflow.contracts.gateway import (
    BrokerErrorReported,
    BrokerOrderPreviewed,
    BrokerOrderSearched,
    BrokerSnapshotCompleted,
    CancelBrokerOrder,
    FindBrokerOrder,
    GatewayConnectionChanged,
    ModifyBrokerOrder,
    PlaceBrokerOrder,
    PreviewBrokerOrder,
    RefreshBrokerState,
)
from ibflow.contracts.market_data import (
    MarketDataTick,
    SubscribeMarketData,
    UnsubscribeMarketData,
)
from ibflow.contracts.orders import (
    CancelOrder,
    ModifyOrder,
    OrderBookUpdated,
    OrderRejected,
    SubmitOrder,
)
from ibflow.contracts.positions import (
    FlattenPositions,
    PositionChanged,
    PositionDriftDetected,
    PositionMarksUpdated,
    ReconciliationReported,
    RequestReconciliation,
    SetPositionLevels,
)
from ibflow.contracts.recommendations import EntrySessionCompleted, SubmitRecommendations
from ibflow.contracts.replies import CommandAccepted, ErrorReply
from ibflow.contracts.session import (
    RequestSessionSchedule,
    SessionEventEmitted,
    SessionScheduleReported,
    TriggerSessionEvent,
)
from ibflow.contracts.system import MessageDeadLettered


class MessageKind(StrEnum):
    """How a message is meant: a request, a fact, an answer, or a price update."""

    COMMAND = "command"
    EVENT = "event"
    REPLY = "reply"
    MARKET_DATA = "market_data"


class Service(StrEnum):
    """The processes on the bus (their ``service_name``)."""

    GATEWAY_BRIDGE = "gateway-bridge"
    ORDER_MANAGER = "order-manager"
    POSITION_MONITOR = "position-monitor"
    SCHEDULER = "scheduler"
    API = "api"
    CLI = "cli"
    """The operators' CLI ``ibflow`` (not a service: it only sends commands and reads)."""


_PLACEHOLDER: Final = re.compile(r"\{[a-z_]+\}")

_BASES: Final[dict[MessageKind, type[Contract]]] = {
    MessageKind.COMMAND: Command,
    MessageKind.EVENT: Event,
    MessageKind.REPLY: Contract,
    MessageKind.MARKET_DATA: Event,
}

PORTFOLIO: Final = "{portfolio}"
SYMBOL: Final = "{symbol}"
SESSION_EVENT: Final = "{name}"
CONSUMER: Final = "{consumer}"


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """One message type of the catalogue."""

    model: type[Contract]
    kind: MessageKind
    subject: str | None
    stream: StreamSpec | None
    producers: tuple[Service, ...]
    consumers: tuple[Service, ...]

    def __post_init__(self) -> None:
        if not issubclass(self.model, _BASES[self.kind]):
            raise TypeError(f"{self.name}: a {self.kind} must subclass {_BASES[self.kind]}")
        if (self.subject is None) != (self.kind is MessageKind.REPLY):
            raise ValueError(f"{self.name}: only replies (and all replies) have no subject")
        if self.stream is not None and self.kind is not MessageKind.EVENT:
            raise ValueError(f"{self.name}: only events are persisted in a stream")

    @property
    def name(self) -> str:
        """The type's name: its class name, its schema's file name."""
        return self.model.__name__

    @property
    def filter(self) -> str | None:
        """The subject pattern with each placeholder as ``*``: a subscription or consumer filter."""
        return None if self.subject is None else _PLACEHOLDER.sub("*", self.subject)

    @property
    def description(self) -> str:
        """The model's docstring, whitespace-normalised paragraph by paragraph."""
        doc = inspect.cleandoc(self.model.__doc__ or "")
        return "\n\n".join(" ".join(p.split()) for p in doc.split("\n\n") if p.strip())


_BRIDGE, _OM, _PM, _SCHED, _API, _CLI = (
    Service.GATEWAY_BRIDGE,
    Service.ORDER_MANAGER,
    Service.POSITION_MONITOR,
    Service.SCHEDULER,
    Service.API,
    Service.CLI,
)
_EVT = s.EVENTS_STREAM


def _command(
    model: type[Command], subject: str, producers: tuple[Service, ...], consumer: Service
) -> MessageSpec:
    return MessageSpec(model, MessageKind.COMMAND, subject, None, producers, (consumer,))


def _event(
    model: type[Event], subject: str, producer: Service, consumers: tuple[Service, ...]
) -> MessageSpec:
    return MessageSpec(model, MessageKind.EVENT, subject, _EVT, (producer,), consumers)


def _reply(model: type[Contract]) -> MessageSpec:
    handlers, requesters = (_BRIDGE, _OM, _PM, _SCHED), (_API, _OM, _PM)
    return MessageSpec(model, MessageKind.REPLY, None, None, handlers, requesters)


CATALOGUE: Final[tuple[MessageSpec, ...]] = (
    # commands to the order-manager, the position-monitor and the scheduler
    _command(SubmitOrder, s.SUBMIT_ORDER, (_API, _PM, _CLI), _OM),
    _command(ModifyOrder, s.MODIFY_ORDER, (_API, _PM), _OM),
    _command(CancelOrder, s.CANCEL_ORDER, (_API, _PM, _CLI), _OM),
    _command(HaltTrading, s.HALT_TRADING, (_API, _CLI), _OM),
    _command(ResumeTrading, s.RESUME_TRADING, (_API, _CLI), _OM),
    _command(FlattenPositions, s.FLATTEN_POSITIONS, (_API, _CLI), _PM),
    _command(SetPositionLevels, s.SET_POSITION_LEVELS, (_API,), _PM),
    _command(RequestReconciliation, s.REQUEST_RECONCILIATION, (_API, _CLI), _PM),
    _command(TriggerSessionEvent, s.TRIGGER_SESSION_EVENT, (_API, _CLI), _SCHED),
    _command(RequestSessionSchedule, s.REQUEST_SESSION_SCHEDULE, (_API, _CLI), _SCHED),
    _command(SubmitRecommendations, s.SUBMIT_RECOMMENDATIONS, (_API,), _OM),
    # commands to the api (the operators' key management)
    _command(CreateApiKey, s.CREATE_API_KEY, (_CLI,), _API),
    _command(ListApiKeys, s.LIST_API_KEYS, (_CLI,), _API),
    _command(RevokeApiKey, s.REVOKE_API_KEY, (_CLI,), _API),
    # commands to the gateway-bridge
    _command(SubscribeMarketData, s.SUBSCRIBE_MARKET_DATA, (_PM, _API), _BRIDGE),
    _command(UnsubscribeMarketData, s.UNSUBSCRIBE_MARKET_DATA, (_PM, _API), _BRIDGE),
    _command(RefreshBrokerState, s.refresh_broker_state(PORTFOLIO), (_OM, _PM, _API), _BRIDGE),
    _command(PlaceBrokerOrder, s.place_broker_order(PORTFOLIO), (_OM,), _BRIDGE),
    _command(ModifyBrokerOrder, s.modify_broker_order(PORTFOLIO), (_OM,), _BRIDGE),
    _command(CancelBrokerOrder, s.cancel_broker_order(PORTFOLIO), (_OM,), _BRIDGE),
    _command(FindBrokerOrder, s.lookup_broker_order(PORTFOLIO), (_OM,), _BRIDGE),
    _command(PreviewBrokerOrder, s.preview_broker_order(PORTFOLIO), (_API,), _BRIDGE),
    # replies to every command
    _reply(CommandAccepted),
    _reply(ErrorReply),
    _reply(BrokerOrderSearched),
    _reply(BrokerOrderPreviewed),
    MessageSpec(SessionScheduleReported, MessageKind.REPLY, None, None, (_SCHED,), (_API, _CLI)),
    MessageSpec(ApiKeyCreated, MessageKind.REPLY, None, None, (_API,), (_CLI,)),
    MessageSpec(ApiKeysListed, MessageKind.REPLY, None, None, (_API,), (_CLI,)),
    MessageSpec(ApiKeyRevoked, MessageKind.REPLY, None, None, (_API,), (_CLI,)),
    # broker facts, from the gateway-bridge
    _event(GatewayConnectionChanged, s.gateway_connection(PORTFOLIO), _BRIDGE, (_OM, _PM, _API)),
    _event(BrokerErrorReported, s.broker_error(PORTFOLIO), _BRIDGE, (_OM, _API)),
    _event(BrokerSnapshotCompleted, s.broker_snapshot(PORTFOLIO), _BRIDGE, (_OM, _PM, _API)),
    _event(OrderStatusChanged, s.order_status(PORTFOLIO), _BRIDGE, (_OM,)),
    _event(ExecutionReported, s.execution(PORTFOLIO), _BRIDGE, (_OM,)),
    _event(CommissionReported, s.commission(PORTFOLIO), _BRIDGE, (_OM,)),
    _event(BrokerPositionReported, s.broker_position(PORTFOLIO), _BRIDGE, (_PM, _API)),
    _event(AccountValuesReported, s.account_values(PORTFOLIO), _BRIDGE, (_OM, _API)),
    # the order-manager's book, money and risk
    _event(OrderBookUpdated, s.order_updated(PORTFOLIO), _OM, (_PM, _API)),
    _event(OrderRejected, s.order_rejected(PORTFOLIO), _OM, (_PM, _API)),
    _event(PortfolioChanged, s.portfolio_changed(PORTFOLIO), _OM, (_API,)),
    _event(TradingHalted, s.trading_halted(PORTFOLIO), _OM, (_API,)),
    _event(TradingResumed, s.trading_resumed(PORTFOLIO), _OM, (_API,)),
    _event(RiskLimitBreached, s.risk_breached(PORTFOLIO), _OM, (_API,)),
    _event(EntrySessionCompleted, s.entry_session(PORTFOLIO), _OM, (_API,)),
    # the position-monitor's positions
    _event(PositionChanged, s.position_changed(PORTFOLIO), _PM, (_API,)),
    _event(ReconciliationReported, s.reconciliation(PORTFOLIO), _PM, (_API,)),
    _event(PositionDriftDetected, s.position_drift(PORTFOLIO), _PM, (_API,)),
    _event(PositionMarksUpdated, s.position_marks(PORTFOLIO), _PM, (_API,)),
    # the scheduler's calendar
    _event(SessionEventEmitted, s.session_event(SESSION_EVENT), _SCHED, (_OM, _PM, _API)),
    # market data, core NATS
    MessageSpec(
        MarketDataTick,
        MessageKind.MARKET_DATA,
        s.market_data(SYMBOL),
        None,
        (_BRIDGE,),
        (_PM, _API),
    ),
    # the bus itself: any service that consumes a stream may dead-letter
    MessageSpec(
        MessageDeadLettered,
        MessageKind.EVENT,
        s.dead_letter(CONSUMER),
        s.DEAD_LETTER_STREAM,
        (_BRIDGE, _OM, _PM, _SCHED, _API),
        (_API,),
    ),
)
"""Every message type of ibflow, in documentation order."""

BY_NAME: Final[dict[str, MessageSpec]] = {spec.name: spec for spec in CATALOGUE}
"""The catalogue by type name."""


def spec_of(model: type[Contract]) -> MessageSpec:
    """The catalogue entry of ``model``; ``KeyError`` if it is not a catalogued message."""
    spec = BY_NAME[model.__name__]
    if spec.model is not model:
        raise KeyError(model.__name__)
    return spec
