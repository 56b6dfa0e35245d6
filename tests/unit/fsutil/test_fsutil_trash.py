"""``fsutil.Trash``: a discarded directory is gone from its place at once and from the disk by close;
what a crash left in the trash is removed by the next one; another filesystem falls back to removing
in place."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from orchestrator.fsutil import Trash


def _tree(at: Path) -> Path:
    (at / "upper" / "a" / "b").mkdir(parents=True)
    (at / "upper" / "a" / "b" / "f").write_text("x")
    (at / "work").mkdir()
    return at


def test_discard_is_immediate_and_close_waits_for_the_disk(tmp_path: Path) -> None:
    trash = Trash(tmp_path / "trash")
    victim = _tree(tmp_path / "c1")
    trash.discard(victim)
    assert not victim.exists()
    trash.discard(tmp_path / "never-was")            # idempotent: nothing to do
    trash.close()
    assert os.listdir(tmp_path / "trash") == []


def test_leftovers_of_a_crash_are_removed_by_the_next_trash(tmp_path: Path) -> None:
    (tmp_path / "trash").mkdir()
    _tree(tmp_path / "trash" / "c1.deadbeef")
    trash = Trash(tmp_path / "trash")
    trash.close()
    assert os.listdir(tmp_path / "trash") == []


def test_a_directory_on_another_filesystem_is_removed_in_place(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    trash = Trash(tmp_path / "trash")

    def cross_device(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "rename", cross_device)
    victim = _tree(tmp_path / "c2")
    trash.discard(victim)
    assert not victim.exists()
    trash.close()


def test_a_discard_after_close_removes_in_place(tmp_path: Path) -> None:
    trash = Trash(tmp_path / "trash")
    trash.close()
    victim = _tree(tmp_path / "late")
    trash.discard(victim)
    assert not victim.exists() and os.listdir(tmp_path / "trash") == []
