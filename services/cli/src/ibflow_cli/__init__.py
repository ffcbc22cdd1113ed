"""``ibflow``: the operator CLI, speaking only NATS (see docs/operators.md)."""
