"""Atomic folder writes (``backend.io.atomic_dir``): the old folder survives every crash."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coral_env.backend import io
from coral_env.backend.io import atomic_dir


def _old(target: Path) -> Path:
    target.mkdir(parents=True)
    (target / "weights").write_text("old")
    return target


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_new_folder_replaces_the_old_one(tmp_path):
    target = _old(tmp_path / "agent")
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target  # written beside the target
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "new" and _listing(tmp_path) == ["agent"]
    assert target.stat().st_mode & 0o777 == 0o777 & ~io._UMASK  # not mkdtemp's 0700


def test_a_crash_before_the_rename_keeps_the_old_folder(tmp_path):
    target = _old(tmp_path / "agent")
    with pytest.raises(RuntimeError, match="killed mid-write"):
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (target / "weights").read_text() == "old" and _listing(tmp_path) == ["agent"]


def test_a_failed_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = _old(tmp_path / "agent")
    real = os.replace

    def replace(src, dst):
        if Path(src).name.startswith(".agent.tmp-"):
            raise OSError("disk gone")
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"):
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "old" and _listing(tmp_path) == ["agent"]


def test_a_kill_keeps_the_old_folder_and_the_next_write_cleans_up(tmp_path):
    target = _old(tmp_path / "agent")
    code = (
        "import os, signal, sys; from coral_env.backend.io import atomic_dir\n"
        "with atomic_dir(sys.argv[1]) as tmp:\n"
        "    (tmp / 'weights').write_text('half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(target)])
    assert proc.returncode == -9
    assert (target / "weights").read_text() == "old"
    assert len(list(tmp_path.glob(".agent.tmp-*"))) == 1  # the killed run's temp folder
    # A kill between moving the old folder aside and renaming the new one in:
    os.replace(target, tmp_path / ".agent.old")
    with atomic_dir(target, clean_stale=True) as tmp:
        assert (target / "weights").read_text() == "old"  # restored before anything else
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "new" and _listing(tmp_path) == ["agent"]


def test_replace_false_keeps_what_another_writer_put_there(tmp_path):
    target = tmp_path / "cache"
    with atomic_dir(target, replace=False) as tmp:
        (tmp / "tok").write_text("first")
    with atomic_dir(target, replace=False) as tmp:
        (tmp / "tok").write_text("second")
    assert (target / "tok").read_text() == "first" and _listing(tmp_path) == ["cache"]
