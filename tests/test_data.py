import io
import shutil

import numpy as np
import pytest
import torch
from conftest import make_tree, png_bytes, shared_dir, zip_tree
from PIL import Image

from cvae_core.config import image_size_problem
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


def test_an_image_moved_to_another_class_is_read_again_with_its_new_label(tree, tmp_path):
    cache = tmp_path / "c"
    before = load_data(tree, cache_dir=cache)
    (tree / "train" / "cat" / "0000.png").rename(tree / "train" / "dog" / "0009.png")  # same size and mtime
    after = load_data(tree, cache_dir=cache)
    assert before.train_y.bincount().tolist()[3:6] == [3, 3, 3] and after.train_y.bincount().tolist()[3:6] == [2, 3, 4]


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


# ---------------------------------------------------------------------------- the data decides the shape


def test_a_five_class_grayscale_folder_gives_one_channel_28x28_images(tmp_path):
    classes = ["ant", "bee", "cow", "dog", "eel"]
    root = make_tree(tmp_path / "gray", per_class=2, classes=classes, size=28, mode="L")
    data = load_data(root)
    assert data.classes == tuple(classes) and (data.image_size, data.channels) == (28, 1)
    assert data.train_x.shape == (10, 1, 28, 28) and data.test_x.shape == (10, 1, 28, 28)
    assert data.train_x.dtype == torch.uint8 and data.train_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    # The pixels as written: bee's (label 1) second training image.
    written = np.asarray(Image.open(root / "train" / "bee" / "0001.png"))
    assert np.array_equal(data.train_x[3, 0].numpy(), written)


def test_a_three_class_64x64_rgb_zip_gives_three_channels(tmp_path):
    root = make_tree(tmp_path / "rgb", per_class=2, classes=["x", "y", "z"], size=64)
    data = load_data(zip_tree(root, tmp_path / "rgb.zip"))
    assert data.classes == ("x", "y", "z") and (data.image_size, data.channels) == (64, 3)
    assert data.train_x.shape == (6, 3, 64, 64) and data.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    written = np.asarray(Image.open(root / "test" / "z" / "0000.png"))  # (H, W, RGB)
    assert np.array_equal(data.test_x[4].permute(1, 2, 0).numpy(), written)


def image_bytes(mode: str, size=(28, 28), fmt: str = "PNG") -> bytes:
    """An image in Pillow's `mode`, its pixels a gradient that fits every mode's range."""
    values = np.arange(size[0] * size[1], dtype=np.float32).reshape(size[1], size[0]) % 256
    buf = io.BytesIO()
    Image.fromarray(values).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def two_class_tree(root, first: bytes, other: bytes, name: str = "x.png"):
    """Two classes of one image each, the first `first`, and `name` under train/b/ holding `other`."""
    for part in ("train", "test"):
        for cls in ("a", "b"):
            (root / part / cls).mkdir(parents=True)
            (root / part / cls / "0.png").write_bytes(first)
    (root / "train" / "b" / name).write_bytes(other)
    return root


@pytest.mark.parametrize("mode, fmt", [("1", "PNG"), ("I;16", "PNG"), ("I", "TIFF"), ("F", "TIFF")])
def test_every_grayscale_mode_gives_one_channel(tmp_path, mode, fmt):
    data = load_data(two_class_tree(tmp_path / "t", image_bytes("L"), image_bytes(mode, fmt=fmt)))
    assert data.train_x.shape == (3, 1, 28, 28)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    wide = (np.arange(28 * 28, dtype=np.uint16).reshape(28, 28) * 83)  # up to 65,073
    buf = io.BytesIO()
    Image.fromarray(wide).save(buf, format="PNG")
    data = load_data(two_class_tree(tmp_path / "t", image_bytes("L"), buf.getvalue()))
    got = data.train_x[2, 0].numpy().astype(int)  # train/b/x.png sorts after train/b/0.png
    assert np.abs(got - wide / 257).max() <= 0.5 and got.max() == 253


def test_a_sixteen_bit_pgm_is_scaled_not_clipped(tmp_path):
    wide = (np.arange(28 * 28, dtype=np.uint16).reshape(28, 28) * 83)  # up to 65,073
    pgm = b"P5 28 28 65535\n" + wide.astype(">u2").tobytes()  # Pillow opens it as 32-bit mode "I"
    data = load_data(two_class_tree(tmp_path / "t", image_bytes("L"), pgm, "x.pgm"))
    got = data.train_x[2, 0].numpy().astype(int)
    assert np.abs(got - wide / 257).max() <= 0.5 and got.max() == 253


@pytest.mark.parametrize("values, mode, expected", [
    (np.linspace(0, 1, 28 * 28), "F", "float image with values from 0 to 1"),
    (np.arange(28 * 28) % 2, "F", "float image with values from 0 to 1"),  # a 0/1 mask
    (np.linspace(0, 1000, 28 * 28), "F", "float image with values from 0 to 1000"),
    (np.arange(28 * 28) * 80, "I", "32-bit integer image with values from 0 to 62640"),
])
def test_wide_values_that_8_bits_would_clip_or_blacken_are_refused_naming_the_file(tmp_path, values, mode, expected):
    buf = io.BytesIO()
    Image.fromarray(values.reshape(28, 28).astype(np.float32 if mode == "F" else np.int32), mode).save(buf, "TIFF")
    root = two_class_tree(tmp_path / "t", image_bytes("L"), buf.getvalue(), "x.tif")
    with pytest.raises(DataError, match=rf"^{root}/train/b/x\.tif: {expected}; images are read as 8-bit values"):
        load_data(root)


def test_a_folder_inside_a_class_folder_is_named(tmp_path):
    root = two_class_tree(tmp_path / "t", image_bytes("L"), image_bytes("L"))
    (root / "train" / "a" / "more").mkdir()
    with pytest.raises(DataError, match=rf"^{root}: train/a/more/ is not at split/class/file depth$"):
        load_data(root)
    zipped = zip_tree(root, tmp_path / "t.zip")  # a zip's entry for the folder
    with pytest.raises(DataError, match=r"t\.zip: train/a/more/ is not at split/class/file depth$"):
        load_data(zipped)


def test_a_broken_link_or_an_unreadable_zip_member_is_named(tmp_path):
    root = two_class_tree(tmp_path / "t", image_bytes("L"), image_bytes("L"))
    (root / "train" / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(DataError, match=rf"^{root}/train/a/gone\.png: cannot be read \(No such file"):
        load_data(root)
    (root / "train" / "a" / "gone.png").unlink()
    raw = bytearray(zip_tree(root, tmp_path / "t.zip").read_bytes())
    member = raw.index(image_bytes("L")[:64])  # the first stored member's data: a bad CRC once changed
    raw[member + 40] ^= 0xFF
    (tmp_path / "bad.zip").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"bad\.zip/test/a/0\.png: cannot be read \(Bad CRC-32"):
        load_data(tmp_path / "bad.zip")


def test_a_class_folder_that_is_a_link_is_part_of_the_cache_key(tmp_path):
    root = two_class_tree(tmp_path / "t", image_bytes("L"), image_bytes("L"))
    shutil.move(root / "train" / "b", tmp_path / "b-images")
    (root / "train" / "b").symlink_to(tmp_path / "b-images")
    cache = tmp_path / "c"
    assert len(load_data(root, cache_dir=cache).train_y) == 3
    (tmp_path / "b-images" / "y.png").write_bytes(image_bytes("L"))  # added behind the link
    assert len(load_data(root, cache_dir=cache).train_y) == 4


def test_a_folder_of_class_folders_keeps_the_cache_key_it_had_before_links_were_followed(tmp_path):
    # A new key would decode the data and compute its reference statistics (real Inception) again.
    # Until links were followed the key hashed every file in os.walk's order, folders sorted.
    import hashlib
    import os

    from cvae_core.data import CACHE_VERSION

    root = tmp_path / "t"
    for part in ("train", "test"):
        for cls in ("cat", "cat-2", "Dog"):  # "cat-2/..." sorts before "cat/..." as a whole path
            (root / part / cls).mkdir(parents=True)
            for name in ("1.png", "0.png"):
                (root / part / cls / name).write_bytes(image_bytes("L"))
    (root / ".DS_Store").write_bytes(b"files no reader reads were keyed too")
    (root / "README").write_text("CIFAR-like")
    (root / "-notes").mkdir()  # sorts before "." and every split
    (root / "-notes" / "x.txt").write_text("more")
    lines = hashlib.sha1()
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            st = os.stat(os.path.join(dirpath, name))
            lines.update(f"{os.path.relpath(dirpath, root)}/{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    key = hashlib.sha1(f"v{CACHE_VERSION}|folder|{root.resolve()}|{lines.hexdigest()}".encode()).hexdigest()[:16]
    assert load_data(root, cache_dir=tmp_path / "c").key == f"t-{key}"


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "CMYK"])
def test_other_modes_are_read_as_rgb(tmp_path, mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    data = load_data(two_class_tree(tmp_path / "t", image_bytes("RGB"), image_bytes(mode, fmt=fmt), f"x.{fmt}"))
    assert data.train_x.shape == (3, 3, 28, 28)


@pytest.mark.parametrize("in_zip", [False, True])
def test_mixed_channels_are_refused_naming_the_file(tmp_path, in_zip):
    root = two_class_tree(tmp_path / "t", image_bytes("RGB"), image_bytes("L"))
    source = zip_tree(root, tmp_path / "t.zip") if in_zip else root
    with pytest.raises(DataError) as e:
        load_data(source)
    assert str(e.value) == f"{source}/train/b/x.png: 28x28 grayscale, but earlier images are 28x28 RGB"


def test_mixed_sizes_are_refused_naming_the_file(tree):
    (tree / "train" / "ship" / "0001.png").write_bytes(png_bytes(8, 1, size=(28, 28)))
    with pytest.raises(DataError) as e:
        load_data(tree)
    assert str(e.value) == f"{tree}/train/ship/0001.png: 28x28 RGB, but earlier images are 32x32 RGB"


def test_a_non_square_image_is_refused_naming_the_file(tree):
    (tree / "test" / "frog" / "0002.png").write_bytes(png_bytes(6, 2, size=(32, 28)))
    with pytest.raises(DataError) as e:
        load_data(tree)
    assert str(e.value) == f"{tree}/test/frog/0002.png: image is 32x28, not square; the models take square images"


def test_a_size_the_models_cannot_take_is_refused_with_the_sizes_that_work(tmp_path):
    root = make_tree(tmp_path / "t", per_class=1, classes=["a", "b"], size=30)
    with pytest.raises(DataError) as e:
        load_data(root)
    assert str(e.value) == f"{root}/train/a/0000.png: {image_size_problem(30)}"
    assert "\n" not in str(e.value) and "28, 32, 64" in str(e.value)


def test_one_class_is_refused(tmp_path):
    root = make_tree(tmp_path / "t", per_class=2, classes=["cat"])
    with pytest.raises(DataError) as e:
        load_data(root)
    assert str(e.value) == (f"{root}: one class folder, train/cat/; a class-conditional model needs at least "
                            "2 classes (one folder per class under train/ and test/)")


def test_more_than_ten_classes_load(tmp_path):
    data = load_data(make_tree(tmp_path / "t", per_class=1, classes=[f"c{i:02d}" for i in range(12)]))
    assert len(data.classes) == 12 and data.train_y.tolist() == list(range(12))


def test_tensors_the_models_cannot_take_are_named():
    def tensors(train_shape, test_shape=(1, 1, 28, 28)):
        return {"train_x": torch.zeros(train_shape, dtype=torch.uint8), "train_y": torch.tensor([0]),
                "test_x": torch.zeros(test_shape, dtype=torch.uint8), "test_y": torch.tensor([1])}

    _check_tensors(tensors((1, 1, 28, 28)), 2, "src")  # grayscale 28x28: fine
    with pytest.raises(DataError, match=r"src: train images are torch.uint8 \(1, 2, 28, 28\), expected uint8"):
        _check_tensors(tensors((1, 2, 28, 28)), 2, "src")
    with pytest.raises(DataError, match="src: image size 30x30 is not supported"):
        _check_tensors(tensors((1, 1, 30, 30)), 2, "src")
    with pytest.raises(DataError, match=r"src: train images are \(1, 28, 28\), test images \(3, 28, 28\)"):
        _check_tensors(tensors((1, 1, 28, 28), (1, 3, 28, 28)), 2, "src")
