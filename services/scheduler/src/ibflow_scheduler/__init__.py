"""ibflow scheduler.

Trading-session events on the real exchange calendar, exactly once across replicas.
"""
