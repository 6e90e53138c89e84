import pytest
import torch

from cvae_core.data import load_data
from results.extractors import TINY, TinyRandom
from results.features import (
    Reference,
    class_statistics,
    load_extractor,
    real_features,
    reference_statistics,
)


@pytest.fixture
def data(tree, tmp_path):
    return load_data(tree, cache_dir=tmp_path / "cache")


def test_reference_names_dataset_version_split_and_subset(data):
    ref = Reference(data, "train", 20)
    assert data.key in ref.cache_name and "-train-20" in ref.cache_name
    assert Reference(data, "test").cache_name != Reference(data, "train").cache_name
    assert Reference(data, "train", 20).label == "tree:train[20]" and Reference(data).label == "tree:train"
    x, y = ref.images()
    assert len(x) == len(y) == 20 and torch.equal(x, Reference(data, "train", 20).images()[0])
    for image, label in zip(x, y):  # the subset keeps each image's label
        assert any(torch.equal(image, data.train_x[i]) for i in torch.nonzero(data.train_y == label).flatten())
    assert len(Reference(data, "all").images()[0]) == len(data.train_x) + len(data.test_x)
    with pytest.raises(ValueError, match="split='val'"):
        Reference(data, "val")
    with pytest.raises(ValueError, match="n=1"):
        Reference(data, "train", 1)


def test_reference_features_and_statistics_are_cached_and_reused(data, tmp_path, monkeypatch):
    cache = tmp_path / "fidelity"
    ref = Reference(data, "test")
    stats = reference_statistics(ref, TINY, cache_dir=cache)
    files = sorted(p.name for p in cache.iterdir())
    assert files == [f"{ref.cache_name}-{TINY}-features.pt", f"{ref.cache_name}-{TINY}-stats.pt"]
    feats = real_features(ref, TINY, cache_dir=cache)
    assert torch.allclose(stats.mu, feats.pool.double().mean(0)) and stats.sigma.dtype == torch.float64
    assert torch.equal(feats.labels, data.test_y)

    # Another process reads the files: the extractor never sees the reference images again.
    import results.features

    monkeypatch.setattr(results.features, "_load", results.features._load.__wrapped__)  # no in-process memo

    def boom(*a, **k):
        raise AssertionError("reference recomputed")

    monkeypatch.setattr(TinyRandom, "forward", boom)
    again = reference_statistics(ref, TINY, cache_dir=cache)
    assert torch.equal(stats.sigma, again.sigma)


def test_class_statistics_are_each_class_alone(data, tmp_path):
    cache = tmp_path / "fidelity"
    ref = Reference(data, "train")
    feats = real_features(ref, TINY, cache_dir=cache)
    per_class = class_statistics(ref, TINY, cache_dir=cache)
    assert len(per_class) == 10
    for c, stats in enumerate(per_class):
        assert torch.allclose(stats.mu, feats.pool[data.train_y == c].double().mean(0))


def test_an_extractor_is_built_once_per_process():
    assert load_extractor(TINY, None, "cpu") is load_extractor(TINY, None, "cpu")
