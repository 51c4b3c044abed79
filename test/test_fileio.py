"""casseg_ros.fileio: files get the umask's permissions (as any newly created file does)."""
from __future__ import annotations

import os

import pytest

from casseg_ros.fileio import atomic_write_bytes, atomic_write_text
from file_modes import mode, umask


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_umasks_mode(tmp_path, mask, expected):
    with umask(mask):
        new = atomic_write_bytes(tmp_path / "sub" / "metrics.json", b"{}")
        replaced = atomic_write_text(new, "{}\n")  # replacing a file: the new file's mode, too
    assert mode(new) == mode(replaced) == expected
    assert sorted(p.name for p in new.parent.iterdir()) == ["metrics.json"]  # no temp file left


def test_an_existing_file_is_replaced_not_rewritten_in_place(tmp_path):
    target = tmp_path / "report.md"
    atomic_write_text(target, "old")
    before = os.stat(target).st_ino
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and os.stat(target).st_ino != before
