"""ibflow order-manager.

Owns orders and money: validation, risk limits, lifecycle, executions, commissions,
cash.
"""
