import pytest

from cvae_core.atomic import atomic_write, atomic_write_text


def test_a_reader_sees_the_old_file_or_the_new_one_and_no_temp_file_is_left(tmp_path):
    path = tmp_path / "sub" / "record.json"
    atomic_write_text(path, "old")

    def half_then_fail(tmp):
        with open(tmp, "w") as f:
            f.write("ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"  # the failed write changed nothing
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and [p.name for p in path.parent.iterdir()] == ["record.json"]
