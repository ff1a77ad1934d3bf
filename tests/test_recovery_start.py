"""Where recovery starts (``recovery.decide_start``), case by case: one
pure function of what recovery found, for the image, the rows, an empty
state, and every refusal."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from openmatch_persistence.errors import IdentityMismatchError, RecoveryError
from openmatch_persistence.recovery import SeenSnapshot, Start, decide_start

OURS = uuid.UUID(int=1)
THEIRS = uuid.UUID(int=2)
AOF = Path("/data/aof")


def start(
    aof_start: int | None,
    image: SeenSnapshot | None,
    checkpoint: SeenSnapshot | None,
    *,
    ignore_snapshot: bool = False,
) -> Start:
    return decide_start(
        aof_dir=AOF,
        aof_start=aof_start,
        image=image,
        checkpoint=checkpoint,
        ignore_snapshot=ignore_snapshot,
        data_dir_id=OURS,
    )


def snap(position: int, written_for: uuid.UUID | None = OURS, epoch: int = 7) -> SeenSnapshot:
    return SeenSnapshot(position, written_for, epoch)


@pytest.mark.parametrize(
    ("aof_start", "image", "checkpoint", "expected"),
    [
        # A fresh data directory: nothing anywhere.
        (None, None, None, Start(None)),
        (0, None, None, Start(None)),
        # The image first, when the AOF still continues it.
        (0, snap(500), snap(900), Start("image", 500, 7)),
        (400, snap(500), snap(900), Start("image", 500, 7)),
        # An image from before identities is this data directory's.
        (0, snap(500, None), None, Start("image", 500, 7)),
        # No image (none, unreadable or damaged): the rows.
        (0, None, snap(900, epoch=9), Start("rows", 900, 9)),
        # An image older than the AOF's start (a compaction after it): the rows.
        (600, snap(500), snap(900), Start("rows", 900, 7)),
    ],
)
def test_where_recovery_starts(
    aof_start: int | None,
    image: SeenSnapshot | None,
    checkpoint: SeenSnapshot | None,
    expected: Start,
) -> None:
    assert start(aof_start, image, checkpoint) == expected


def test_ignoring_the_snapshot_starts_empty_only_from_a_whole_aof() -> None:
    assert start(0, snap(500), snap(900), ignore_snapshot=True) == Start(None)
    with pytest.raises(RecoveryError, match="--ignore-snapshot was given, but compaction removed"):
        start(400, snap(500), snap(900), ignore_snapshot=True)


def test_a_compacted_aof_without_a_snapshot_is_refused() -> None:
    with pytest.raises(RecoveryError, match="the database has no snapshot, but compaction removed"):
        start(400, None, None)


def test_snapshots_older_than_the_aof_name_an_older_backup() -> None:
    with pytest.raises(RecoveryError, match=r"snapshot is at position 300.*older backup"):
        start(400, snap(200), snap(300))


@pytest.mark.parametrize(
    ("image", "checkpoint"),
    [
        (snap(500, THEIRS), None),
        (None, snap(900, THEIRS)),
        # Even when the other snapshot is ours and usable.
        (snap(500), snap(900, THEIRS)),
        (snap(500, THEIRS), snap(900)),
    ],
)
def test_a_snapshot_of_another_data_directory_is_refused(
    image: SeenSnapshot | None, checkpoint: SeenSnapshot | None
) -> None:
    with pytest.raises(IdentityMismatchError, match=str(THEIRS)) as refused:
        start(0, image, checkpoint)
    assert (refused.value.data_dir_id, refused.value.database_id) == (OURS, THEIRS)


def test_ignoring_the_snapshot_does_not_look_at_whose_it_is() -> None:
    assert start(0, snap(500, THEIRS), None, ignore_snapshot=True) == Start(None)


def test_by_default_the_snapshot_is_used_and_nobody_s_is_refused() -> None:
    assert decide_start(
        aof_dir=AOF, aof_start=0, image=snap(500, THEIRS), checkpoint=None
    ) == Start("image", 500, 7)


def test_a_data_directory_without_an_aof_yet_starts_empty(tmp_path: Path) -> None:
    # Nothing written yet: no AOF directory and an empty database give the
    # empty state at position 0 (there is no log start to ask about).
    from openmatch_persistence.recovery import load_base
    from openmatch_persistence.store import SqliteStore

    with SqliteStore(":memory:") as store:
        store.migrate()
        base = load_base(tmp_path / "aof", store, False)
    assert (base.source, base.position, base.epoch) == (None, 0, None)
    assert base.state.position == 0 and base.state.order_count == 0
    assert not (tmp_path / "aof").exists()  # nothing made on the way
