import shutil

import pytest
import torch
from conftest import make_tree, png_bytes, shared_dir, zip_tree

from cvae_core.data import DataError, _check_tensors, load_data, split


def test_folder_and_zip_give_the_same_tensors(tree, tmp_path):
    a = load_data(tree)
    b = load_data(zip_tree(tree, tmp_path / "t.zip"))
    assert a.train_x.shape == (30, 3, 32, 32) and a.train_x.dtype == torch.uint8
    assert a.test_x.shape == (30, 3, 32, 32)
    assert a.train_y.tolist() == sorted([c for c in range(10)] * 3)
    assert a.classes[0] == "airplane" and a.classes[-1] == "truck"
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)


def test_second_load_comes_from_the_cache(tree, tmp_path):
    cache = tmp_path / "c"
    first = load_data(tree, cache_dir=cache)
    assert len(list((cache / "data").glob("*.pt"))) == 1
    assert torch.equal(load_data(tree, cache_dir=cache).train_x, first.train_x)
    assert len(list((cache / "data").glob("*.pt"))) == 1
    # Rewriting a file changes its mtime, so the source is decoded again under a new key.
    (tree / "train" / "cat" / "0000.png").write_bytes(png_bytes(3, 0))
    again = load_data(tree, cache_dir=cache)
    assert torch.equal(first.train_x, again.train_x)
    assert len(list((cache / "data").glob("*.pt"))) == 2


@pytest.mark.slow
def test_the_real_cifar10_zip_decodes_to_its_splits(real_data, tmp_path_factory):
    again = load_data(real_data.source, cache_dir=shared_dir(tmp_path_factory, "real-data"))  # from the cache
    assert again.key == real_data.key and again.classes[3] == "cat"
    assert again.train_x.shape == (50000, 3, 32, 32) and again.test_x.shape == (10000, 3, 32, 32)
    assert torch.equal(again.train_y.bincount(), torch.full((10,), 5000))


def test_splits(tree):
    data = load_data(tree)
    tx, ty, vx, vy = split(data)
    assert len(tx) == 30 and torch.equal(vx, data.test_x)
    tx, ty, vx, vy = split(data, "all")
    assert len(tx) == 60 and len(ty) == 60 and len(vx) == 30
    with pytest.raises(ValueError, match="train_on"):
        split(data, "everything")


def test_missing_path_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.zip: data source does not exist"):
        load_data(tmp_path / "nope.zip")


def test_empty_class_folder_is_named(tree):
    shutil.rmtree(tree / "test" / "dog")
    (tree / "test" / "dog").mkdir()
    with pytest.raises(DataError, match=r"test/dog/ is empty"):
        load_data(tree)


def test_empty_class_folder_in_zip_is_named(tree, tmp_path):
    shutil.rmtree(tree / "train" / "frog")
    (tree / "train" / "frog").mkdir()
    with pytest.raises(DataError, match=r"train/frog/ is empty"):
        load_data(zip_tree(tree, tmp_path / "t.zip"))


def test_non_image_file_is_named(tree, tmp_path):
    (tree / "train" / "cat" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"train/cat/notes.txt: not a readable image"):
        load_data(zip_tree(tree, tmp_path / "t.zip"))


@pytest.mark.parametrize("in_zip", [False, True])
def test_a_text_file_named_as_an_image_is_named_in_its_zip_or_folder(tree, tmp_path, in_zip):
    (tree / "test" / "dog" / "x.jpg").write_text("not a picture")
    source = zip_tree(tree, tmp_path / "t.zip") if in_zip else tree
    with pytest.raises(DataError) as e:
        load_data(source)
    assert str(e.value) == f"{source}/test/dog/x.jpg: not a readable image (not a format Pillow can open)"


def test_a_truncated_image_says_what_is_wrong_with_it(tree):
    (tree / "train" / "cat" / "0001.png").write_bytes(png_bytes(3, 1)[:60])
    with pytest.raises(DataError, match=r"/train/cat/0001.png: not a readable image \(.*truncated"):
        load_data(tree)


def test_mixed_sizes_are_named(tree):
    (tree / "train" / "ship" / "0001.png").write_bytes(png_bytes(8, 1, size=(33, 32)))
    with pytest.raises(DataError, match=r"train/ship/0001.png: image is 33x32, expected 32x32"):
        load_data(tree)


def test_wrong_class_count_is_named(tmp_path):
    root = make_tree(tmp_path / "eleven", classes=[f"c{i:02d}" for i in range(11)])
    with pytest.raises(DataError, match="found 11 class folders"):
        load_data(root)


def test_train_and_test_classes_must_agree(tree):
    (tree / "test" / "truck").rename(tree / "test" / "lorry")
    with pytest.raises(DataError, match="lorry"):
        load_data(tree)


def test_labels_out_of_range_are_named():
    data = {
        "train_x": torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "train_y": torch.tensor([0, 10]),
        "test_x": torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "test_y": torch.tensor([0]),
    }
    with pytest.raises(DataError, match=r"src: train label 10 at index 1 is outside \[0, 10\)"):
        _check_tensors(data, 10, "src")


def test_not_a_zip_is_named(tmp_path):
    bad = tmp_path / "data.zip"
    bad.write_text("not a zip")
    with pytest.raises(DataError, match="data.zip: not a valid zip"):
        load_data(bad)
