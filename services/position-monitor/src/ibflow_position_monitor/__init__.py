"""ibflow position-monitor.

Owns day-trade positions: tick-driven stop/target exits, close-out, broker
reconciliation.
"""
