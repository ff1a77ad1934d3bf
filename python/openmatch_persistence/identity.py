"""A data directory's identity: a random id made when the directory is
created, kept in ``DATA_DIR/identity`` beside the AOF and recorded in the
database (``persistence_identity``) with every checkpoint and state image,
so that a database is never taken for another data directory's
(docs/storage.md, "Identity").

The file is JSON, one object: ``{"format": 1, "id": "<uuid>",
"created_at": "<RFC 3339>", "created_for": "new" | "existing"}``
("existing": given to a data directory made by a version before
identities, which may adopt its old database on upgrade); owner-only,
written whole or not at all.
"""

from __future__ import annotations

import datetime
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from openmatch_persistence.errors import NotADataDirError, RecoveryError
from openmatch_persistence.fileio import write_file_atomically

IDENTITY_FILENAME = "identity"
AOF_DIRNAME = "aof"
FORMAT = 1


@dataclass(frozen=True)
class DataDirIdentity:
    id: uuid.UUID
    created_at: str
    #: "new", or "existing" for a data directory from before identities.
    created_for: str
    #: The data directory (absolute) it was read from.
    path: Path


def is_data_dir(root: Path) -> bool:
    """A data directory is a directory with an ``aof/`` directory in it."""
    return (root / AOF_DIRNAME).is_dir()


def require_data_dir(root: Path) -> None:
    """Raises :class:`NotADataDirError` unless ``root`` is a data directory."""
    if not root.exists():
        raise NotADataDirError(f"{root}: no such data directory")
    if not is_data_dir(root):
        raise NotADataDirError(
            f"{root} is not a data directory (it has no {AOF_DIRNAME}/); "
            "nothing was created (a new one is made by `simulate` or Persistence.open)"
        )


def read_identity(root: Path) -> DataDirIdentity | None:
    """The identity of ``root``, or None when it has none (a data directory
    made by a version before identities, or not yet made)."""
    path = root / IDENTITY_FILENAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RecoveryError(f"{path}: cannot read the data directory's identity: {e}") from None
    try:
        obj = json.loads(data)
        if obj.get("format") != FORMAT:
            raise ValueError(f"unknown format {obj.get('format')!r}")
        return DataDirIdentity(
            uuid.UUID(obj["id"]),
            str(obj.get("created_at", "")),
            "existing" if obj.get("created_for") == "existing" else "new",
            root.absolute(),
        )
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise RecoveryError(
            f"{path}: the data directory's identity is damaged ({e}); it holds the id recorded "
            "in the database (persistence_identity.data_dir_id): restore it from there"
        ) from None


def create_identity(root: Path, *, existing: bool = False) -> DataDirIdentity:
    """Gives ``root`` a new random identity (durably: temp file, fsync,
    rename, directory fsync). Refuses to replace an existing one.
    ``existing``: ``root`` was made by a version before identities."""
    identity = DataDirIdentity(
        uuid.uuid4(),
        datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "existing" if existing else "new",
        root.absolute(),
    )
    text = json.dumps(
        {
            "format": FORMAT,
            "id": str(identity.id),
            "created_at": identity.created_at,
            "created_for": identity.created_for,
        }
    )
    write_file_atomically(root / IDENTITY_FILENAME, (text + "\n").encode())
    return identity
