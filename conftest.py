"""Fixtures for every test in the repository: real NATS and PostgreSQL (see ibflow.testing)."""

pytest_plugins = ("ibflow.testing.pytest_plugin",)
