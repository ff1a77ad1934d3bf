"""The built wheel installs with pip into a fresh virtualenv and works there:
import, encode/decode, the console script."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import openmatch_persistence as om

ROOT = Path(__file__).resolve().parent.parent


def find_or_build_wheel(tmp: Path) -> Path:
    """The wheel of this version: $OPENMATCH_WHEEL, else dist/ (scripts/setup.sh
    builds it there), else a fresh `maturin build`."""
    given = os.environ.get("OPENMATCH_WHEEL")
    if given:
        return Path(given)
    pattern = f"openmatch_persistence-{om.__version__}-*.whl"
    built = sorted((ROOT / "dist").glob(pattern), key=lambda p: p.stat().st_mtime)
    if built:
        return built[-1]
    subprocess.run(
        [sys.executable, "-m", "maturin", "build", "--release", "--out", str(tmp)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return next(tmp.glob(pattern))


def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    wheel = find_or_build_wheel(tmp_path / "dist")
    assert "abi3" in wheel.name, "one wheel must serve CPython 3.9 and later"
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # --no-deps: the codec needs nothing beyond the wheel; the database
    # drivers are exercised by the store tests.
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    script = (
        "import openmatch_persistence as om, pathlib, sys\n"
        "assert pathlib.Path(om.__file__).is_relative_to(pathlib.Path(sys.prefix)), om.__file__\n"
        "op = om.EpochAdvanced(7, om.EpochPhase.SEAL)\n"
        "assert om.decode(om.encode(op)) == op\n"
        "print(om.to_json(op))\n"
    )
    run = subprocess.run(
        [python, "-c", script], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    assert run.stdout == '{"EpochAdvanced":[7,"Seal"]}\n'
    golden = ROOT / "tests" / "fixtures" / "golden.aof"
    dump = subprocess.run(
        [env_dir / "bin" / "openmatch-persistence", "aof", "dump", str(golden)],
        check=True,
        capture_output=True,
        text=True,
    )
    expected = (ROOT / "tests" / "fixtures" / "golden.jsonl").read_text(encoding="utf-8")
    assert dump.stdout == expected
    stubs = list((env_dir / "lib").glob("python3*/site-packages/openmatch_persistence/_core.pyi"))
    assert stubs, "the typed stubs ship in the wheel"
    assert list(stubs[0].parent.glob("py.typed"))
