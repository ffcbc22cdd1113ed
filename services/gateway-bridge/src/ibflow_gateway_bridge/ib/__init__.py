"""The edge to Interactive Brokers: the only package that imports ``ib_async``.

:mod:`~ibflow_gateway_bridge.ib.adapter` is the connection port (:class:`IbClient`),
:mod:`~ibflow_gateway_bridge.ib.mapping` turns ib_async objects into ibflow contracts,
:mod:`~ibflow_gateway_bridge.ib.reprs` keeps ib_async's per-message logging cheap.
"""

from ibflow_gateway_bridge.ib.adapter import IbClient, IbConnectError, IbOrderError, WhatIf

__all__ = ["IbClient", "IbConnectError", "IbOrderError", "WhatIf"]
