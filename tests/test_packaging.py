"""The source distribution builds and carries what the metadata promises:
the license it names, the README, full PEP 621 metadata."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The standard library's TOML reader from 3.11 on; older Pythons skip.
tomllib = pytest.importorskip("tomllib")


def test_the_license_file_matches_the_metadata() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))
    assert project["license"] == cargo["workspace"]["package"]["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]


@pytest.mark.slow
def test_sdist_builds_with_license_readme_and_metadata(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "maturin", "sdist", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (sdist,) = tmp_path.glob("openmatch_persistence-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {Path(n).relative_to(Path(n).parts[0]).as_posix() for n in tar.getnames()}
        top = tar.getnames()[0].split("/")[0]
        member = tar.extractfile(f"{top}/PKG-INFO")
        assert member is not None
        meta = Parser().parsestr(member.read().decode())
    assert {"LICENSE", "README.md", "pyproject.toml", "Cargo.lock"} <= names
    assert "python/openmatch_persistence/_core.pyi" in names
    assert not any(n.endswith(".so") for n in names)
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["Requires-Python"] == ">=3.9"
    assert meta["Description-Content-Type"].startswith("text/markdown")
    assert len(meta.get_all("Classifier") or []) >= 10
    requires = meta.get_all("Requires-Dist") or []
    # psycopg's advice for a library: the plain package, the libpq left to
    # the installer ([binary] is an extra).
    assert "psycopg>=3.1" in requires
    assert any(r.startswith("psycopg[binary]") and "extra == 'binary'" in r for r in requires)
