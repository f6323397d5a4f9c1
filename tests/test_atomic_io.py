"""Atomic writes (iqabench/store/atomic_io.py): whole files or nothing, clear refusals, only dead writers' leftovers."""

from __future__ import annotations

import os

import pytest

from iqabench.cli.boundary import user_message
from iqabench.store.atomic_io import (
    _HOST,
    UnwritablePathError,
    atomic_write_bytes,
    atomic_write_text,
    is_stale_temp_file,
    refuse_file_in_path,
)


def test_writes_replace_whole_files_and_leave_no_temporary_file(tmp_path):
    path = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(path, "first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


def test_a_folder_or_a_file_in_the_path_is_refused_in_one_sentence(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(UnwritablePathError) as folder:
        atomic_write_text(tmp_path / "folder", "x")
    assert user_message(folder.value) == (f"{tmp_path / 'folder'} is a folder; iqabench only writes regular files "
                                          "there: give a file path")
    (tmp_path / "report.html").write_text("x")
    with pytest.raises(UnwritablePathError, match="report.html is a file, not a folder$"):
        refuse_file_in_path(tmp_path / "report.html" / "x.html")
    with pytest.raises(UnwritablePathError, match="cannot be written: .* is a file, not a folder$"):
        atomic_write_text(tmp_path / "report.html" / "x.html", "x")
    assert (tmp_path / "report.html").read_text() == "x"


def test_only_temporary_files_of_dead_writers_on_this_host_are_stale(tmp_path):
    assert is_stale_temp_file(tmp_path / f".x.png.{_HOST}.999999999.0123abcd.tmp")
    assert not is_stale_temp_file(tmp_path / f".x.png.{_HOST}.{os.getpid()}.0123abcd.tmp")  # alive: this test
    assert not is_stale_temp_file(tmp_path / ".x.png.ffffffff.999999999.0123abcd.tmp") or _HOST == "ffffffff"
    assert not is_stale_temp_file(tmp_path / "x.png")
