"""README.md's two commands for a fresh machine: the first (set up, then
run the main job on the embedded default) works from a clean clone in a
fresh virtualenv; the second is exactly what CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def fresh_machine_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## On a fresh machine", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_readme_gives_two_commands_and_ci_runs_the_second() -> None:
    setup_and_run, run_tests = fresh_machine_commands()
    assert "scripts/setup.sh" in setup_and_run and "simulate" in setup_and_run
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert run_tests in ci.splitlines(), f"CI must run {run_tests!r}"


@pytest.mark.slow
def test_first_command_from_a_clean_clone_in_a_fresh_venv(tmp_path: Path) -> None:
    setup_and_run, _ = fresh_machine_commands()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    assert not (clone / ".venv").exists()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT / ".venv"))
    )
    # The Rust build cache is shared with this checkout's only to save time;
    # the clone still builds and installs its own wheel into its own venv.
    env["CARGO_TARGET_DIR"] = str(ROOT / "target")
    run = subprocess.run(
        ["bash", "-c", setup_and_run],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert re.search(r"simulated 20000 operations", run.stdout), run.stdout
    assert "recovery check OK" in run.stdout, run.stdout
    assert (clone / ".venv" / "bin" / "openmatch-persistence").exists()
    assert (clone / "openmatch-data" / "aof").is_dir()


def python_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", readme, re.S)


def test_the_python_example_runs_as_written(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The Python API", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```python\n(.*?)```", section, re.S)
    run = _run_python(example, tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("negative_balance balance "), run.stdout
    assert lines[1:3] == ["100", "2"], run.stdout  # the balance and the order, in the state
    assert (tmp_path / "data" / "aof").is_dir()


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_every_python_block_of_the_readme_runs(index: int, tmp_path: Path) -> None:
    run = _run_python(python_blocks()[index], tmp_path)
    assert run.returncode == 0, run.stderr


def _run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
