"""ibflow gateway-sim: An IB Gateway simulator speaking the real TWS socket protocol."""
