import pytest
import torch
from pydantic import ValidationError

from cvae_core.data import load_data
from results.extractors import TINY, TinyRandom
from results.features import MetricOptions, cache_path, class_statistics, real_features, reference_statistics
from results.metrics import score
from results.reference import Reference


@pytest.fixture
def data(tree, tmp_path):
    return load_data(tree, cache_dir=tmp_path / "cache")


def test_a_reference_takes_a_fixed_subset_and_is_named_by_the_images_it_uses(data):
    ref = Reference(n=20)
    x, y = ref.images(data)
    assert len(x) == len(y) == 20 and torch.equal(x, Reference(split="train", n=20).images(data)[0])
    for image, label in zip(x, y):  # the subset keeps each image's label
        assert any(torch.equal(image, data.train_x[i]) for i in torch.nonzero(data.train_y == label).flatten())
    assert len(Reference(split="all").images(data)[0]) == len(data.train_x) + len(data.test_x)
    assert ref.label(data) == "tree:train[20]" and Reference().label(data) == "tree:train"
    # n beyond the split takes the whole split, and its name says so (not "[10000]")
    assert len(data.train_x) < 10_000 and Reference(n=10_000).label(data) == "tree:train"
    assert torch.equal(Reference(n=10_000).images(data)[0], data.train_x)
    with pytest.raises(ValidationError, match="split"):
        Reference(split="val")
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        Reference(n=1)


def test_cache_files_are_keyed_by_everything_their_value_depends_on(data, tmp_path):
    opts = MetricOptions(data, TINY, cache_dir=tmp_path)
    path = cache_path(Reference(n=20), opts, "stats")
    assert path.parent == tmp_path and path == cache_path(Reference(split="train", n=20), opts, "stats")
    others = [cache_path(Reference(n=21), opts, "stats"), cache_path(Reference(split="test", n=20), opts, "stats"),
              cache_path(Reference(n=20), opts, "features"),
              cache_path(Reference(n=20), MetricOptions(data, "other-extractor", cache_dir=tmp_path), "stats")]
    assert len({path, *others}) == 5
    # the same images under another n share one file: n past the split's size is the whole split
    assert cache_path(Reference(n=10_000), opts, "stats") == cache_path(Reference(), opts, "stats")


def test_reference_features_and_statistics_are_cached_and_reused(data, tmp_path, monkeypatch):
    cache = tmp_path / "fidelity"
    ref, opts = Reference(split="test"), MetricOptions(data, TINY, cache_dir=cache)
    stats = reference_statistics(ref, opts)
    files = sorted(p.name for p in cache.iterdir())
    assert files == sorted(cache_path(ref, opts, what).name for what in ("features", "stats"))
    feats = real_features(ref, opts)
    assert torch.allclose(stats.mu, feats.pool.double().mean(0)) and stats.sigma.dtype == torch.float64
    assert torch.equal(feats.labels, data.test_y)

    # Another process reads the files: the extractor never sees the reference images again.
    import results.features

    monkeypatch.setattr(results.features, "_load", results.features._load.__wrapped__)  # no in-process memo
    monkeypatch.setattr(results.features, "_statistics", results.features._statistics.__wrapped__)

    def boom(*a, **k):
        raise AssertionError("reference recomputed")

    monkeypatch.setattr(TinyRandom, "forward", boom)
    again = reference_statistics(ref, opts)
    assert torch.equal(stats.sigma, again.sigma)


def test_class_statistics_are_each_class_alone(data, tmp_path):
    ref, opts = Reference(), MetricOptions(data, TINY, cache_dir=tmp_path)
    feats = real_features(ref, opts)
    each = class_statistics(ref, opts)
    assert len(each) == 10
    for c, stats in enumerate(each):
        assert torch.allclose(stats.mu, feats.pool[data.train_y == c].double().mean(0))


def test_a_reference_with_a_class_of_one_image_is_one_line_and_caches_nothing(data, tmp_path):
    """Its covariance would be NaN, cached, and every finalist's per-class FID would fail on it."""
    ref, opts = Reference(n=12), MetricOptions(data, TINY, cache_dir=tmp_path)
    counts = torch.bincount(ref.images(data)[1], minlength=10)
    assert counts.min() < 2  # 12 images over 10 classes
    with pytest.raises(ValueError, match=r"per-class FID needs at least 2 real images of each class; tree:train\[12\] "
                                         r"has \{.*\}: use a larger reference n"):
        class_statistics(ref, opts)
    assert not cache_path(ref, opts, "class-stats").exists()


def test_scoring_a_row_again_keeps_one_square_root_per_statistics(data, tmp_path):
    """Per-class FID with more samples than feature dimensions takes each class covariance's square
    root: computed once per statistics and device, not once more for every score."""
    ref, opts = Reference(), MetricOptions(data, TINY, cache_dir=tmp_path)
    per_class = 100  # more samples of each class than the 64 feature dimensions
    images = data.train_x[torch.arange(10 * per_class) % len(data.train_x)]
    labels = torch.arange(10).repeat_interleave(per_class)
    score(images, labels, ref, opts)
    held = [s._roots for s in (reference_statistics(ref, opts), *class_statistics(ref, opts))]
    roots = [dict(r) for r in held]
    score(images, labels, ref, opts)
    after = [s._roots for s in (reference_statistics(ref, opts), *class_statistics(ref, opts))]
    assert all(a is b for a, b in zip(held, after))  # the same statistics objects, not fresh ones
    assert [list(r) for r in after] == [["cpu"]] * 11
    assert all(r[k] is roots[i][k] for i, r in enumerate(after) for k in r)  # not recomputed
