"""tpcflow.atomic: the one atomic write: all or nothing, nothing left behind."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpcflow import atomic


@settings(max_examples=30, deadline=None)
@given(first=st.binary(max_size=4096), second=st.binary(max_size=4096))
def test_bytes_round_trip_and_replace(tmp_path_factory, first, second):
    folder = tmp_path_factory.mktemp("a")
    path = folder / "sub" / "f.bin"
    atomic.write_bytes(path, first)
    assert path.read_bytes() == first
    atomic.write_bytes(path, second)
    assert path.read_bytes() == second
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path, error):
    path = atomic.write_text(tmp_path / "config.yaml", "old: 1\n")

    def failing(tmp):
        tmp.write_text("half written")
        raise error

    with pytest.raises(type(error)):
        atomic.atomic_write(path, failing)
    assert path.read_text() == "old: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_a_writer_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic.atomic_write(tmp_path / "x", lambda tmp: None)
    assert list(tmp_path.iterdir()) == []


def test_temporary_names_are_hidden_and_unique(tmp_path):
    names = {atomic.temporary_path(tmp_path / "out.h5").name for _ in range(100)}
    assert len(names) == 100
    assert all(n.startswith(".out.h5.") and n.endswith(".tmp") for n in names)


def test_commit_moves_a_filled_temporary(tmp_path):
    tmp = atomic.temporary_path(tmp_path / "out.h5")
    tmp.write_bytes(b"data")
    assert atomic.commit(tmp, tmp_path / "out.h5").read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]


def test_a_folder_as_destination_fails_before_any_work(tmp_path):
    work = []
    with pytest.raises(IsADirectoryError, match="folder, not a file"):
        atomic.atomic_write(tmp_path, lambda tmp: work.append(tmp))
    assert work == [] and list(tmp_path.iterdir()) == []
