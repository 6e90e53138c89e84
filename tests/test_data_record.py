"""RUN/data.json: the data source a run started with and the data's shape, for later commands."""

import json
import shutil

import pytest
from conftest import make_tree

from cvae_core.data import load_data
from cvae_core.sources import DataError
from results.run_folder import DataRecord, RunFileError, RunFolder


def test_the_source_and_the_shape_are_recorded_once(tmp_path):
    gray = load_data(make_tree(tmp_path / "gray", per_class=1, classes=["a", "b", "c"], size=28, mode="L"))
    rgb = load_data(make_tree(tmp_path / "rgb", per_class=1, classes=["x", "y"], size=64))
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    assert run.recorded_data() is None
    run.record_data(str(tmp_path / "gray"), gray)
    run.record_data(str(tmp_path / "rgb"), rgb)  # a resumed run keeps its first record
    assert json.loads((run.path / "data.json").read_text()) == {
        "source": str(tmp_path / "gray"), "image_size": 28, "channels": 1, "classes": ["a", "b", "c"]}
    record = run.recorded_data()
    assert record == DataRecord(str(tmp_path / "gray"), 28, 1, ("a", "b", "c"))
    assert record.shape == gray.shape  # what a model is built for, without loading the images
    assert run.source() == str(tmp_path / "gray")


def test_a_record_of_the_source_alone_gains_the_shape_when_the_run_resumes(tmp_path):
    data = load_data(make_tree(tmp_path / "tree", per_class=1))
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    (run.path / "data.json").write_text(json.dumps({"source": str(tmp_path / "tree")}))  # an earlier version's
    assert run.recorded_data() is None and run.source() == str(tmp_path / "tree")
    run.check_source(str(tmp_path / "tree"))
    run.record_data(str(tmp_path / "tree"), data)
    assert run.recorded_data() == DataRecord(str(tmp_path / "tree"), 32, 3, data.classes)


def test_resuming_on_other_data_is_refused_in_one_line(tmp_path):
    data = load_data(make_tree(tmp_path / "tree", per_class=1))
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    run.check_source("mnist")  # nothing recorded yet: any source
    run.record_data("mnist", data)
    run.check_source("mnist")
    with pytest.raises(DataError) as e:
        run.check_source("fashion-mnist")
    assert str(e.value) == (f"--data fashion-mnist: this run started with mnist (in {run.path / 'data.json'}); "
                            "pass that, or --fresh to start over")


def test_a_source_whose_images_changed_shape_is_refused_on_resume(tmp_path):
    source = tmp_path / "tree"
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    run.record_data(str(source), load_data(make_tree(source, per_class=1, size=28, mode="L"), cache_dir=tmp_path))
    shutil.rmtree(source)
    changed = load_data(make_tree(source, per_class=1, size=32), cache_dir=tmp_path)
    with pytest.raises(DataError, match=r"holds 32x32 RGB, 10 classes now; this run started with 28x28 grayscale, "
                                        r"10 classes"):
        run.check_data(changed)
    same = RunFolder(tmp_path / "same")
    same.path.mkdir()
    same.record_data(str(source), changed)
    same.check_data(changed)  # the images it started with: resumed


@pytest.mark.parametrize("record, problem", [  # what RUN/data.json holds (None: a folder), the problem named
    (None, "is a folder, not a data record"),
    ({"source": "/d.zip", "classes": ["a", "b"]}, "holds no image_size"),
    ({"source": "/d.zip", "image_size": 32, "channels": 3, "classes": 5}, "classes: must be a list of at least 2"),
    ({"source": "/d.zip", "image_size": "32", "channels": 3, "classes": ["a"]}, "image_size: must be a whole number"),
    ({"source": "/d.zip", "image_size": 32, "channels": 2, "classes": ["a"]}, "channels: must be one of [1, 3]"),
    ({"source": "/d.zip", "image_size": 30, "channels": 3, "classes": ["a", "b"]}, "image_size: image size 30x30 is "
                                                                                  "not supported"),
    ({"source": "/d.zip", "image_size": 32, "channels": 3, "classes": ["a"]}, "classes: must be a list of at least 2"),
])
def test_a_damaged_data_record_is_one_error_naming_it_whoever_reads_it(tmp_path, record, problem):
    run = RunFolder(tmp_path)
    path = tmp_path / "data.json"
    if record is None:
        path.mkdir()
    else:
        path.write_text(json.dumps(record))
    for read in (run.source, lambda: run.source("/given.zip"), lambda: run.check_source("/d.zip"), run.recorded_data):
        with pytest.raises(RunFileError) as e:
            read()
        assert str(e.value).startswith(f"{path}: {problem}")
