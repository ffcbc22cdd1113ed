"""ibflow gateway-bridge.

The only process that talks to Interactive Brokers: one ib_async connection per
portfolio.
"""
