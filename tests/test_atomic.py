"""Atomic writes (onebit/atomic.py): all or nothing, with the file mode open() would give."""

from pathlib import Path

import pytest

from onebit.atomic import atomic_path, atomic_write, atomic_write_text


def test_replaces_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def half_then_fail(f) -> None:
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_files_get_the_usual_mode_not_mkstemps_0600(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    with atomic_path(tmp_path / "atomic") as tmp:
        tmp.write_bytes(b"x")
    assert (tmp_path / "atomic").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_checkpoint_files_are_readable_by_others(random_checkpoint) -> None:
    for path in Path(random_checkpoint()).rglob("*"):
        assert path.stat().st_mode & 0o044, f"{path.name} is not readable by group/others"
