"""tpcflow.atomic: the one atomic write: all or nothing, nothing left behind."""

from __future__ import annotations

import os

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


@settings(max_examples=30, deadline=None)
@given(rows=st.lists(st.fixed_dictionaries({"entry": st.integers(0, 10**6), "name": st.text(max_size=12),
                                            "value": st.floats(allow_nan=False)}), max_size=5))
def test_csv_rows_round_trip(tmp_path_factory, rows):
    import csv

    path = atomic.write_csv(tmp_path_factory.mktemp("c") / "rows.csv", rows)
    with path.open(newline="") as fh:
        back = list(csv.DictReader(fh))
    assert back == [{k: str(v) for k, v in r.items()} for r in rows]


def test_a_csv_row_with_another_key_keeps_the_old_file(tmp_path):
    path = atomic.write_csv(tmp_path / "m.csv", [{"a": 1}])
    with pytest.raises(ValueError, match="b"):
        atomic.write_csv(path, [{"a": 2}, {"b": 3}])
    assert path.read_text().splitlines() == ["a", "1"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]


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


def test_the_next_write_sweeps_what_a_killed_writer_left(tmp_path):
    import subprocess
    import sys

    dest = tmp_path / "out.h5"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = atomic.temporary_path(dest).name.replace(f"-{os.getpid()}.", f"-{int(dead.stdout)}.")
    (tmp_path / stale).write_bytes(b"half an event")
    live = atomic.temporary_path(dest)  # this process: alive, its file must stay
    live.write_bytes(b"being written")
    other_host = tmp_path / f".out.h5.0badc0de-{int(dead.stdout)}.abcd1234.tmp"
    other_host.write_bytes(b"another node's")
    atomic.write_text(dest, "done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([dest.name, live.name, other_host.name])


def test_sigterm_of_a_command_leaves_no_temporary_file(tmp_path):
    """``tpcflow generate`` stopped by SIGTERM mid-file: exit 143 and nothing hidden left behind."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "tpcflow.cli.main", "generate", "big.h5", "--events", "500",
                             "--downsample", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".big.h5.*.tmp")):
            assert proc.poll() is None and time.monotonic() < deadline, "no temporary file appeared"
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "terminated" in err, err
    assert list(tmp_path.iterdir()) == []
