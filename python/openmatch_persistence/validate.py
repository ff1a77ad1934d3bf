"""Refuses, before the AOF append, values that the database store cannot
hold exactly: a decimal past NUMERIC(28,8), text past a VARCHAR of the
schema, an integer past BIGINT, a timestamp past BIGINT nanoseconds.

An operation that passed here is stored and read back unchanged; one that
did not is never appended, so the AOF and the database cannot disagree.
The rules live in the Rust core (``openmatch_aof::store_fit``): this runs
before every append, and reading each field through Python objects cost
tens of microseconds per order.
"""

from __future__ import annotations

from openmatch_persistence import _core


def validate_for_store(op: _core.Operation) -> None:
    """Raises :class:`InvalidValueError`, naming the field and the value, if
    any value of ``op`` does not fit the database schema exactly. Call it
    before appending ``op`` to the AOF."""
    _core.check_fits_store(op)


__all__ = ["validate_for_store"]
