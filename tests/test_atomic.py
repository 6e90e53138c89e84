from pathlib import Path

import pytest

from cvae_core.atomic import (
    append_records,
    atomic_save_image,
    atomic_write,
    atomic_write_all,
    atomic_write_text,
    keep_records,
    read_records,
)


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


def test_files_written_together_change_all_or_none_when_one_write_fails(tmp_path):
    paths = [tmp_path / "a.txt", tmp_path / "sub" / "b.txt"]
    for path in paths:
        atomic_write_text(path, "old")

    def fails(tmp):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_all([(paths[0], lambda tmp: Path(tmp).write_text("new")), (paths[1], fails)])
    assert [p.read_text() for p in paths] == ["old", "old"]  # the first was written, and not moved into place
    atomic_write_all([(path, lambda tmp: Path(tmp).write_text("new")) for path in paths])
    assert [p.read_text() for p in paths] == ["new", "new"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.txt", "sub"]  # no temp file left


def test_a_record_cut_short_by_a_kill_is_skipped_and_cannot_swallow_the_next(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_records(path, [{"epoch": 1}, {"epoch": 2}])
    with open(path, "a") as f:
        f.write('{"epoch": 3, "val_lo')  # the kill came mid-line
    append_records(path, [{"epoch": 3}])  # the resumed run makes it again
    assert read_records(path) == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]
    assert read_records(tmp_path / "missing.jsonl") == []


def test_keeping_records_drops_the_others_and_leaves_a_file_that_keeps_them_all_untouched(tmp_path):
    path = tmp_path / "m.jsonl"
    append_records(path, [{"epoch": e} for e in (1, 2, 3)])
    before = path.stat().st_mtime_ns
    keep_records(path, lambda r: r["epoch"] <= 3)
    assert path.stat().st_mtime_ns == before
    keep_records(path, lambda r: r["epoch"] <= 1)
    assert read_records(path) == [{"epoch": 1}] and list(tmp_path.iterdir()) == [path]
    keep_records(tmp_path / "missing.jsonl", lambda r: False)  # nothing to keep: nothing written
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("name", ["grid.png", "grid.JPG"])
def test_an_image_cut_short_by_a_kill_leaves_the_old_one_whole(tmp_path, name):
    from PIL import Image

    path = tmp_path / name
    atomic_save_image(Image.new("RGB", (8, 8), "red"), path)

    class KilledMidWrite:  # an image whose save dies after writing part of the file
        def save(self, fp, format):
            Path(fp).write_bytes(b"\x89PNG\r\n")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_save_image(KilledMidWrite(), path)
    with Image.open(path) as image:
        assert image.size == (8, 8) and image.convert("RGB").getpixel((0, 0))[0] > 200
    assert list(tmp_path.iterdir()) == [path]
