"""A database that no longer matches the AOF, with the embedded SQLite
store (the PostgreSQL cases are in test_faults_db.py): restored from an
older backup after compaction removed what lies between, or lost."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from faultkit import replay_digest

import openmatch_persistence as om
from openmatch_persistence import _core
from openmatch_persistence.compaction import CompactionPolicy
from openmatch_persistence.persistence import SQLITE_FILENAME, Persistence
from openmatch_persistence.workload import take


def test_a_database_restored_from_an_old_backup_is_refused_saying_so(tmp_path: Path) -> None:
    ops = take(3000, seed=41)
    data, backup = tmp_path / "data", tmp_path / "backup.sqlite3"
    policy = CompactionPolicy(max_bytes=None, max_age=None)
    with Persistence.open(data, compaction=policy) as p:
        p.append_many(ops[:1000])
        old = p.snapshot()
    shutil.copy(data / SQLITE_FILENAME, backup)
    with Persistence.open(data, compaction=policy) as p:
        p.append_many(ops[1000:])
        p.compact()
        assert p.digest() == replay_digest(ops)
    first = _core.aof_start(data / "aof")
    assert first is not None and first > old
    shutil.copy(backup, data / SQLITE_FILENAME)
    # The operations between the backup and the AOF's start exist nowhere.
    with pytest.raises(om.RecoveryError) as caught:
        Persistence.open(data)
    message = str(caught.value)
    assert f"snapshot is at position {old}" in message, message
    assert f"before position {first}" in message
    assert "has no snapshot" not in message


def test_a_database_restored_from_a_backup_the_aof_still_covers_recovers(
    tmp_path: Path,
) -> None:
    ops = take(2000, seed=42)
    data, backup = tmp_path / "data", tmp_path / "backup.sqlite3"
    with Persistence.open(data) as p:
        p.append_many(ops[:500])
        old = p.snapshot()
    shutil.copy(data / SQLITE_FILENAME, backup)
    with Persistence.open(data) as p:
        p.append_many(ops[500:])
    shutil.copy(backup, data / SQLITE_FILENAME)
    with Persistence.open(data) as p:
        assert p.recovery.snapshot == old and p.recovery.replayed == 1500
        assert p.digest() == replay_digest(ops)
