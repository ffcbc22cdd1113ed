"""Exceptions raised by :mod:`ibflow.db`."""

from __future__ import annotations


class DbError(Exception):
    """Base class of every error raised by :mod:`ibflow.db`."""


class MigrationError(DbError):
    """A migration could not be discovered or applied; the message names package and file."""


class MigrationChecksumError(MigrationError):
    """An already-applied migration file was changed since it was applied.

    Raised before anything is applied. Applied migrations are history: write a new
    file instead of editing an old one.
    """


class InboxError(DbError):
    """The inbox was used incorrectly, e.g. :func:`ibflow.db.claim` outside a transaction."""
