import copy
import re
from pathlib import Path

import pytest
import yaml
from conftest import CNN_RESNET_SPACE, MIXED_SPACE

from cvae_core import PRESETS
from cvae_core.config import CIFAR10_SHAPE
from search.settings import for_data, load_spec, parse_spec, read_yaml, with_overrides
from search.space import Fixed, SpaceError

SPACES = Path(__file__).resolve().parents[1] / "spaces"

BASE = {
    "name": "t",
    "space": MIXED_SPACE,
    "search": {"num_samples": 4, "asha": {"max_t": 10, "grace_period": 2, "reduction_factor": 2},
               "resources": {"cpu": 1, "gpu": 0.25}, "objective": {}},
    "final": {"top_k": 2, "samplers": ["prior", "gmm"], "reference": {"split": "train", "n": 500}},
}


def with_change(path: str, value, delete=False):
    raw = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    return raw


SHAPES = {"cifar10": CIFAR10_SHAPE, "28x28 grayscale": {"image_size": 28, "channels": 1, "num_classes": 10}}


@pytest.mark.parametrize(("name", "data"), [("cnn", "cifar10"), ("mlp", "cifar10"), ("all", "cifar10"),
                                            ("seed", "cifar10"), ("smoke", "cifar10"), ("mnist", "28x28 grayscale")])
def test_shipped_spaces_are_valid_for_their_data(name, data):
    spec = for_data(load_spec(SPACES / f"{name}.yaml"), SHAPES[data])
    assert spec.name == name


def test_seed_space_is_the_reports_16_presets():
    spec = load_spec(SPACES / "seed.yaml")
    assert sorted(spec.space.presets) == sorted(PRESETS)
    assert spec.search.num_samples == 16
    assert spec.space.top["lr"] == Fixed(1e-4) and spec.space.top["batch_size"] == Fixed(512)


def test_final_defaults_are_the_issues_and_the_reports():
    final = parse_spec(with_change("final", None, delete=True)).final
    assert (final.top_k, final.seeds, final.patience, final.samples_per_class) == (3, 1, 20, 1000)
    assert final.samplers == ("prior", "gmm", "two_stage") and final.reference.split == "train"
    assert final.reference.n is None and (final.two_stage.width, final.two_stage.layers) == (1024, 3)
    assert load_spec(SPACES / "seed.yaml").final.top_k == 16  # every preset is scored
    smoke = load_spec(SPACES / "smoke.yaml").final
    assert smoke.reference.n is not None and smoke.samples_per_class <= 50


def test_offline_inception_without_the_extra_is_refused_before_any_work(monkeypatch):
    import search.settings

    monkeypatch.setattr(search.settings, "nvidia_torchscript_path", lambda: None)
    with pytest.raises(SpaceError, match=re.escape("final.feature_extractor: inception-v3-nvidia-offline needs")):
        parse_spec(with_change("final.feature_extractor", "inception-v3-nvidia-offline"))


MALFORMED = [
    # (change, value, expected key path in the message)
    ("space.conv.kernel_size", {"choice": [3, 4, "five"]}, "space.conv.kernel_size.choice[2]"),
    ("space.conv.kernel_size", {"choice": []}, "space.conv.kernel_size.choice: must be a non-empty list"),
    ("space.conv.kernel_size", {"choice": [3, 3]}, "space.conv.kernel_size.choice: has repeated"),
    ("space.conv.kernel_size", {"uniform": [3, 5]}, "space.conv.kernel_size.uniform"),
    ("space.conv.layers", {"int": [2, 9]}, "space.conv: layers=8"),  # stride-2 stack fits no image
    ("space.conv.padding", -1, "space.conv.padding: -1 must be >= 0"),
    ("space.conv.stride", 0, "space.conv.stride: 0 must be >= 1"),
    ("space.conv.dilation", 2, "space.conv.dilation: unknown key"),
    ("space.conv.channels", None, "space.conv.channels: None is not a number"),
    ("space.lr", {"loguniform": [0.0, 1e-2]}, "space.lr.loguniform[0]: 0.0 must be > 0"),
    ("space.lr", -1e-3, "space.lr: -0.001 must be > 0"),
    ("space.lr", {"loguniform": [1e-2, 1e-4]}, "space.lr.loguniform: low=0.01 must be < high=0.0001"),
    ("space.lr", {"loguniform": [1e-4]}, "space.lr.loguniform: must be [low, high]"),
    ("space.lr", {"normal": [0, 1]}, "space.lr: unknown distribution 'normal'"),
    ("space.lr", {"uniform": [1e-4, 1e-3], "log": True}, "space.lr: a distribution has exactly one key"),
    ("space.lr", {"int": [1, 3]}, "space.lr.int: this key is not an integer"),
    ("space.lr", "fast", "space.lr: 'fast' is not a number"),
    ("space.latent", {"choice": [8, 2.5]}, "space.latent.choice[1]: 2.5 is not an integer"),
    ("space.latent", 0, "space.latent: 0 must be >= 1"),
    ("space.latent", None, "space.latent: None is not a number"),
    ("space.batch_size", [64, 128], "space.batch_size: a list is not a value"),
    ("space.family", "rnn", "space.family: 'rnn' is not one of"),
    ("space.norm", {"choice": ["batch", "group"]}, "space.norm.choice[1]: 'group' is not one of"),
    ("space.likelihood", {"uniform": [0, 1]}, "space.likelihood.uniform: this key takes a fixed value"),
    ("space.sigma", 0, "space.sigma: 0 must be > 0"),
    ("space.beta", -0.1, "space.beta: -0.1 must be >= 0"),
    ("space.optimizer", "sgd", "space.optimizer: unknown key"),
    ("space.mlp.width", {"choice": [0, 128]}, "space.mlp.width.choice[0]: 0 must be >= 1"),
    ("space.mlp.layers", 1.5, "space.mlp.layers: 1.5 is not an integer"),
    ("space.lr", float("nan"), "space.lr: nan is not finite"),
    ("space.lr", {"uniform": "abc"}, "space.lr.uniform: must be [low, high]"),
    ("space.lr", {"int": "x"}, "space.lr.int: must be [low, high]"),
    ("search.resources.gpu", 1.5, "search.resources.gpu: 1.5 is fractional and > 1"),
    ("search.resources.gpu", -1, "search.resources.gpu: -1 must be >= 0"),
    ("search.resources.cpu", 0, "search.resources.cpu: 0 must be > 0"),
    ("search.resources.tpu", 1, "search.resources.tpu: unknown key"),
    ("search.num_samples", 0, "search.num_samples: 0 must be >= 1"),
    ("search.num_samples", "many", "search.num_samples: 'many' is not a number"),
    ("search.asha.grace_period", 20, "search.asha.grace_period: 20 must be <= max_t=10"),
    ("search.asha.reduction_factor", 1, "search.asha.reduction_factor: 1 must be >= 2"),
    ("search.asha.brackets", 2, "search.asha.brackets: unknown key"),
    ("search.asha.min_agreement", 1.5, "search.asha.min_agreement: 1.5 must be <= 1"),
    ("search.asha.min_agreement", "high", "search.asha.min_agreement: 'high' is not a number"),
    ("search.asha.min_agreement", True, "search.asha.min_agreement: True is not a number"),
    ("search.asha.min_finished", 2, "search.asha.min_finished: 2 must be >= 3"),
    ("search.asha.run_to_end_every", 1, "search.asha.run_to_end_every: 1 must be >= 2"),
    ("search.patience", 0, "search.patience: 0 must be >= 1"),
    ("search.seed", 2**32, "search.seed: 4294967296 must be <= 4294967295"),
    ("search.train_on", "test", "search.train_on: 'test' is not one of"),
    ("search.sampler", [1], "search.sampler: must be a mapping"),
    ("search.objective.metric", "psnr",
     "search.objective.metric: 'psnr' is not one of ['fid', 'kid', 'val_loss', 'params']"),
    ("search.objective.metric", ["fid", "psnr"], "search.objective.metric[1]: 'psnr' is not one of"),
    ("search.objective.metric", [["fid"]], "search.objective.metric[0]: ['fid'] is not one of"),
    ("search.objective.metric", "params", "search.objective.metric: 'params' cannot rank trials first: it is known "
                                          "before training"),
    ("search.objective.metric", ["params", "fid"], "search.objective.metric: 'params' cannot rank trials first"),
    ("search.objective.metric", ["fid", "fid"], "search.objective.metric[1]: 'fid' is listed twice"),
    ("search.objective.metric", ["val_loss", "kid"], "search.objective.metric[1]: 'kid' cannot follow val_loss: a "
                                                     "search ranked by its validation loss scores no samples"),
    ("search.objective.metric", [], "search.objective.metric: [] must be a name or a non-empty list of names"),
    ("search.searcher", {"multivariate": False}, "search.searcher.group: true needs multivariate: true"),
    ("search.searcher", {"constant_liar": "yes"}, "search.searcher.constant_liar: 'yes' is not true or false"),
    ("search.searcher", {"model": "gp", "group": False},
     "search.searcher.group: a setting of TPE's, and model is 'gp'"),
    ("search.searcher", {"model": "smac"}, "search.searcher.model: 'smac' is not one of"),
    ("search.objective.samples_per_class", 0, "search.objective.samples_per_class: 0 must be >= 1"),
    ("search.objective.reference", {"split": "val"}, "search.objective.reference.split: 'val' is not one of"),
    ("search.objective.reference", {"n": 1}, "search.objective.reference.n: 1 must be >= 2"),
    ("search.objective.reference", [1], "search.objective.reference: must be a mapping"),
    ("search.objective.feature_extractor", "clip", "search.objective.feature_extractor: 'clip' is not one of"),
    ("search.objective.every", 5, "search.objective.every: unknown key"),
    ("final.top_k", 0, "final.top_k: 0 must be >= 1"),
    ("final.seeds", 1.5, "final.seeds: 1.5 is not an integer"),
    ("final.samples_per_class", 1, "final.samples_per_class: 1 must be >= 2"),  # each class's FID needs 2
    ("final.samplers", [], "final.samplers: must be a non-empty list"),
    ("final.samplers", ["prior", "flow"], "final.samplers[1]: 'flow' is not one of"),
    ("final.samplers", ["gmm", "gmm"], "final.samplers[1]: 'gmm' is listed twice"),
    ("final.two_stage", {"width": 0}, "final.two_stage.width: 0 must be >= 1"),
    ("final.two_stage", {"epochs": 1.5}, "final.two_stage.epochs: 1.5 is not an integer"),
    ("final.two_stage", {"depth": 3}, "final.two_stage.depth: unknown key"),
    ("final.reference", {"split": "val"}, "final.reference.split: 'val' is not one of"),
    ("final.reference", {"n": 1}, "final.reference.n: 1 must be >= 2"),
    ("final.reference", {"subset": 5}, "final.reference.subset: unknown key"),
    ("final.feature_extractor", "clip", "final.feature_extractor: 'clip' is not one of"),
    ("search.resources", {"cpu": 1.0e-9}, "search.resources.cpu: 1e-09 is below 0.0001, the smallest share Ray"),
    ("search.resources", {"gpu": 5.0e-5}, "search.resources.gpu: 5e-05 is below 0.0001, the smallest share Ray"),
    ("final.inception_weights", "/no/such/weights.pth", "final.inception_weights: /no/such/weights.pth is not a file"),
    ("final.inception_weights", "~nosuchuser/w.pth", "final.inception_weights: ~nosuchuser/w.pth: ~nosuchuser names"),
    ("final.inception_weights", "w\0.pth", "final.inception_weights: 'w\\x00.pth': holds a NUL character"),
    ("final.inception_weights", "w" * 300, "final.inception_weights: wwwwwwwwwwwwwwwwwwwwwwww...: a name of 300 bytes"),
    ("final.topk", 3, "final.topk: unknown key"),
    ("serach", {}, "serach: unknown top-level key"),
    ("name", "a/b", "name: 'a/b' must be"),
]


@pytest.mark.parametrize("path, value, message", MALFORMED, ids=[m[2][:40] for m in MALFORMED])
def test_malformed_space_names_file_key_and_problem(tmp_path, path, value, message):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(with_change(path, value)))
    with pytest.raises(SpaceError) as err:
        load_spec(f)
    assert str(err.value).startswith(f"{f}: ")
    assert message in str(err.value)


RESNET_MALFORMED = [
    ("resnet.width", {"choice": [0, 8]}, "space.resnet.width.choice[0]: 0 must be >= 1"),
    ("resnet.scales", {"int": [2, 9]}, "space.resnet: scales=9, cond_norm=False, norm=batch is not a valid model: "
                                       "scales=9 halves 256x256 to a fraction of a pixel (at most 8)"),
    ("resnet.upsample", "bilinear", "space.resnet.upsample: 'bilinear' is not one of ['nearest', 'transposed']"),
    ("resnet.cond_norm", "yes", "space.resnet.cond_norm: 'yes' is not true or false"),
    ("resnet.blocks", None, "space.resnet.blocks: missing"),
    ("resnet.depth", 3, "space.resnet.depth: unknown key"),
    ("resnet.activation", "gelu", "space.resnet.activation: 'gelu' is not one of"),
    ("norm", {"choice": ["batch", "group"]}, "space.norm.choice[1]: 'group' is not one of ['none', 'batch'] for family "
                                             "'cnn'; set it for resnet trials alone in space.resnet.norm"),
    ("activation", "silu", "space.activation: 'silu' is not one of ['relu', 'leaky_relu'] for family 'cnn'"),
    ("label", "word", "space.label: 'word' is not one of ['index', 'onehot']"),
    ("ema", 1.0, "space.ema: 1.0 must be < 1"),
    ("ema", {"uniform": [0.9, 1.5]}, "space.ema.uniform[1]: 1.5 must be < 1"),
    ("weight_decay", -1e-4, "space.weight_decay: -0.0001 must be >= 0"),
    ("family", "cnn", "space.resnet: given, but family is never 'resnet'"),
    ("family", "resnet", "space.conv: given, but family is never 'cnn'"),
]


@pytest.mark.parametrize("key, value, message", RESNET_MALFORMED, ids=[m[2][:40] for m in RESNET_MALFORMED])
def test_malformed_resnet_and_recipe_keys_are_named(key, value, message):
    space = copy.deepcopy(CNN_RESNET_SPACE)
    *parents, last = key.split(".")
    node = space
    for k in parents:
        node = node[k]
    if value is None:
        del node[last]
    else:
        node[last] = value
    with pytest.raises(SpaceError) as err:
        parse_spec({**BASE, "space": space})
    assert message in str(err.value)


def test_a_space_with_resnet_trials_needs_their_group_and_cnn_only_keys_need_cnn():
    space = {k: v for k, v in CNN_RESNET_SPACE.items() if k != "resnet"}
    with pytest.raises(SpaceError, match=re.escape("space.resnet: missing (family can be 'resnet')")):
        parse_spec({**BASE, "space": space})
    only_resnet = {k: v for k, v in CNN_RESNET_SPACE.items() if k not in ("conv", "h")}
    with pytest.raises(SpaceError, match=re.escape("space.label: given, but family is never 'cnn'")):
        parse_spec({**BASE, "space": {**only_resnet, "family": "resnet"}})
    # What is wrong first: the group is there at all, before what it lacks
    with pytest.raises(SpaceError, match=re.escape("space.resnet: given, but family is never 'resnet'")):
        parse_spec({**BASE, "space": {**CNN_RESNET_SPACE, "family": "cnn", "resnet": {"width": 4}}})


@pytest.mark.parametrize(
    "path, message",
    [
        ("space.conv", "space.conv: missing (family can be 'cnn')"),
        ("space.h", "space.h: missing"),
        ("space.latent", "space.latent: missing"),
        ("space.family", "space.family: missing"),
        ("space.conv.stride", "space.conv.stride: missing"),
        ("space", "space: missing"),
    ],
)
def test_missing_keys_are_named(path, message):
    with pytest.raises(SpaceError, match=re.escape(message)):
        parse_spec(with_change(path, None, delete=True))


def test_branch_for_a_family_that_is_never_sampled_is_rejected():
    raw = with_change("space.family", "mlp")
    with pytest.raises(SpaceError, match=re.escape("space.conv: given, but family is never 'cnn'")):
        parse_spec(raw)


def test_presets_space_rules():
    ok = {"space": {"presets": ["cnn-arch3-M3"], "lr": 1e-4}}
    assert parse_spec(ok).space.presets == ("cnn-arch3-M3",)
    with pytest.raises(SpaceError, match=re.escape("space.presets[1]: unknown preset 'cnn-arch9-M1'")):
        parse_spec({"space": {"presets": ["cnn-arch3-M3", "cnn-arch9-M1"]}})
    with pytest.raises(SpaceError, match=re.escape("space.latent: not allowed beside presets")):
        parse_spec({"space": {"presets": ["mlp-M1"], "latent": 8}})
    with pytest.raises(SpaceError, match=re.escape("space.lr: must be a fixed value beside presets")):
        parse_spec({"space": {"presets": ["mlp-M1"], "lr": {"choice": [1e-4, 1e-3]}}})
    with pytest.raises(SpaceError, match=re.escape("search.num_samples: not used with space.presets")):
        parse_spec({"space": {"presets": ["mlp-M1"]}, "search": {"num_samples": 3}})


def test_file_level_errors(tmp_path):
    with pytest.raises(SpaceError, match="nope.yaml: file not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nspace: {family: mlp, latent: [4}\n")
    with pytest.raises(SpaceError, match=r"bad.yaml: line 2, column 32: not valid YAML: expected ',' or ']'") as e:
        load_spec(bad)
    assert "\n" not in str(e.value)  # one line, like every other input error
    bad.write_text("- just\n- a list\n")
    with pytest.raises(SpaceError, match="bad.yaml: top level: must be a mapping"):
        load_spec(bad)


def test_inception_weights_from_the_command_line_must_be_a_file(tmp_path):
    spec = parse_spec(BASE)
    assert with_overrides(spec, inception_weights=None) is spec
    with pytest.raises(SpaceError, match=re.escape("--inception-weights /no/such.pth: not a file")):
        with_overrides(spec, inception_weights="/no/such.pth")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    assert with_overrides(spec, inception_weights=str(weights)).final.inception_weights == str(weights)


@pytest.mark.parametrize("name, message", [
    ("..", "name: '..' must be a plain folder name"),
    (".", "name: '.' must be a plain folder name"),
    ("a\\b", "must be a plain folder name"),
    ("a\0b", "name: 'a\\x00b' must be a plain folder name (no '/', no '\\', no NUL, not '.' or '..')"),
    ("", "name: '' must be a non-empty string"),
])
def test_the_run_name_is_a_plain_folder_name(name, message):
    with pytest.raises(SpaceError, match=re.escape(message)):
        parse_spec(with_change("name", name))


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text(yaml.safe_dump(BASE, sort_keys=False).replace("  lr:", "  lr: 5.0\n  lr:", 1))
    lines = f.read_text().splitlines()
    first = next(i for i, line in enumerate(lines, 1) if line.startswith("  lr:"))
    with pytest.raises(SpaceError, match=re.escape(f"{f}: space.lr: given twice (lines {first} and {first + 1})")):
        load_spec(f)


def _alias_bomb(levels: int) -> str:
    """Each alias a list of ten of the one before: 10**levels values from a few hundred bytes."""
    lines = ["a0: &a0 [" + ", ".join(["1.0"] * 10) + "]"]
    lines += [f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, problem", [
    (_alias_bomb(30), "a4: line 5: expands to more than 100,000 values (aliases within aliases); a space file has "
                      "a few hundred"),
    ("space: &a {family: mlp, lr: {choice: *a}}\n",
     "space.lr.choice: line 1: an alias within what it names (a recursive alias)"),
    ("space:\n  lr: {choice: &a [1.0, *a]}\n",
     "space.lr.choice[1]: line 2: an alias within what it names (a recursive alias)"),
    ("space: " + "[" * 40 + "]" * 40 + "\n", "line 1: nested more than 32 levels deep; a space file is a few"),
    ("space: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", "nested more than 32 levels deep; a space file is a few"),
    ("x0: &x0 " + "{a: " * 20 + "1" + "}" * 20 + "\nx1: &x1 " + "{a: " * 20 + "*x0" + "}" * 20 + "\n",
     "line 1: nested more than 32 levels deep; a space file is a few"),  # each alias shallow, repeated deep
])
def test_a_file_too_deep_or_whose_aliases_never_end_is_one_line(tmp_path, text, problem):
    f = tmp_path / "odd.yaml"
    f.write_text(text)
    with pytest.raises(SpaceError) as e:
        load_spec(f)
    assert str(e.value) == f"{f}: {problem}"


def test_aliases_and_merge_keys_a_space_file_may_use_still_read(tmp_path):
    f = tmp_path / "anchors.yaml"
    f.write_text("x-base: &base {family: mlp, latent: 8, mlp: {layers: 1, width: 8}}\n"
                 "space:\n  <<: *base\n  lr: {choice: &lrs [1.0e-4, 1.0e-3]}\n  beta: {choice: *lrs}\n")
    assert read_yaml(f)["space"]["beta"] == {"choice": [1.0e-4, 1.0e-3]}


def test_a_space_file_that_is_a_device_is_refused_before_it_is_read():
    with pytest.raises(SpaceError, match=re.escape("/dev/zero: not a regular file")):
        load_spec("/dev/zero")


@pytest.mark.parametrize("text, problem", [
    ("? [a, b]\n: 1\n", "top level: line 1: a key must be a name, not a list or mapping"),
    ("space:\n  presets: [mlp-M1]\n  1: x\n  foo: y\n", "space: line 3: a key must be a name, not 1"),
])
def test_a_key_that_is_not_a_name_is_one_line(tmp_path, text, problem):
    f = tmp_path / "odd.yaml"
    f.write_text(text)
    with pytest.raises(SpaceError, match="^" + re.escape(f"{f}: {problem}") + "$"):
        load_spec(f)

def test_a_number_yaml_reads_as_text_gets_a_hint(tmp_path):
    f = tmp_path / "text.yaml"
    f.write_text(yaml.safe_dump(BASE).replace("- 0.0001", "- 1e-4"))
    with pytest.raises(SpaceError) as err:
        load_spec(f)
    assert "space.lr.loguniform[0]: '1e-4' is text to YAML, not a number: write 0.0001" in str(err.value)
    f.write_text(yaml.safe_dump(BASE).replace("- 0.0001", "- 1e-5"))
    with pytest.raises(SpaceError, match=re.escape("write 1.0e-05")):
        load_spec(f)
    assert yaml.safe_load("1.0e-05") == 1e-5  # the hint is what YAML reads as a number


@pytest.mark.parametrize("section", ["search", "final"])
def test_an_empty_section_means_its_defaults(tmp_path, section):
    f = tmp_path / "empty.yaml"
    raw = {k: v for k, v in BASE.items() if k != section}
    f.write_text(yaml.safe_dump(raw) + f"{section}:\n")
    spec = load_spec(f)
    assert getattr(spec, section) == getattr(parse_spec(raw), section)


def test_a_folder_or_a_binary_file_is_not_a_space_file(tmp_path):
    with pytest.raises(SpaceError, match=re.escape(f"{tmp_path}: is a folder, not a space file")):
        load_spec(tmp_path)
    binary = tmp_path / "model.pt"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(SpaceError, match=re.escape(f"{binary}: not a text file")):
        load_spec(binary)


def test_relative_inception_weights_are_found_beside_the_space_file(tmp_path, monkeypatch):
    (tmp_path / "spaces").mkdir()
    weights = tmp_path / "spaces" / "w.pth"
    weights.write_bytes(b"x")
    f = tmp_path / "spaces" / "s.yaml"
    f.write_text(yaml.safe_dump(with_change("final.inception_weights", "w.pth")))
    monkeypatch.chdir(tmp_path)  # not the space file's folder
    spec = load_spec(f)
    assert spec.final.inception_weights == str(weights)
    assert spec.raw["final"]["inception_weights"] == str(weights)  # the run folder's copy works from anywhere



def test_inception_weights_given_on_the_command_line_stand_in_for_a_run_folders_missing_ones(tmp_path):
    # search.final on another machine: the run folder's space file names weights this one lacks
    stored = tmp_path / "space.yaml"
    stored.write_text(yaml.safe_dump(with_change("final.inception_weights", "/elsewhere/w.pth")))
    with pytest.raises(SpaceError, match="final.inception_weights: /elsewhere/w.pth is not a file"):
        load_spec(stored)
    here = tmp_path / "w.pth"
    here.write_bytes(b"x")
    assert load_spec(stored, inception_weights=str(here)).final.inception_weights == str(here)
    # search.run gives --num-samples after: the weights stay the flag's
    assert with_overrides(load_spec(stored, inception_weights=str(here)), 5).final.inception_weights == str(here)

@pytest.mark.parametrize("raw, notice", [
    ({"space": {"presets": ["mlp-M1"]}, "search": {"searcher": {"model": "gp"}}},
     "search.searcher: not used with space.presets (each preset runs once); ignored"),
    ({**BASE, "space": {**BASE["space"], "beta": 0.02},
      "search": {"objective": {"metric": "val_loss", "samples_per_class": 10}}},
     "search.objective.samples_per_class: not used when trials are ranked by val_loss (no samples are scored); "
     "ignored"),
    ({**BASE, "search": {"asha": {"min_finished": 4}}},
     "search.asha.min_finished: used only with min_agreement or run_to_end_every, neither of which is set; "
     "ignored"),
    ({"space": {"presets": ["mlp-M1"]}, "search": {"asha": {"run_to_end_every": 8}}},
     "search.asha.run_to_end_every: not used with space.presets (no searcher numbers their trials); ignored"),
    ({**BASE, "final": {"samplers": ["prior", "gmm"], "two_stage": {"epochs": 5}}},
     "final.two_stage: used only by the two_stage sampler, which final.samplers leaves out; ignored"),
    ({**BASE, "final": {"samplers": ["prior"], "gmm_components": 3}},
     "final.gmm_components: used only by the gmm sampler, which final.samplers leaves out; ignored"),
])
def test_a_setting_that_takes_no_effect_is_named_in_a_notice(raw, notice):
    # a notice, not an error: a run started with it can still be finished and resumed
    assert notice in parse_spec(raw).notices

def test_the_objective_defaults_to_fid_of_1000_samples_and_to_val_loss_for_presets():
    objective = parse_spec(BASE).search.objective
    assert (objective.metric, objective.samples_per_class) == (("fid",), 100)
    assert (objective.reference.split, objective.reference.n, objective.feature_extractor) == ("train", 10_000, "auto")
    assert parse_spec(with_change("search.objective", {"reference": {"n": None}})).search.objective.reference.n is None
    # a reference written without n keeps the search's subset, not the whole split
    written = parse_spec(with_change("search.objective", {"reference": {"split": "test"}})).search.objective.reference
    assert (written.split, written.n) == ("test", 10_000)
    assert load_spec(SPACES / "seed.yaml").search.objective.metric == ("val_loss",)


def test_val_loss_cannot_rank_trials_of_different_likelihood_families():
    raw = with_change("space.likelihood", {"choice": ["bernoulli", "gaussian_learned"]})
    raw["search"]["objective"] = {"metric": "val_loss"}
    with pytest.raises(SpaceError, match=re.escape(
            "search.objective.metric: val_loss cannot rank trials whose likelihoods differ "
            "(['bernoulli', 'gaussian_learned'])")):
        parse_spec(raw)
    raw["search"]["objective"] = {"metric": "kid"}
    assert parse_spec(raw).search.objective.metric == ("kid",)
    one_family = with_change("space.likelihood", {"choice": ["gaussian", "gaussian_learned"]})
    one_family["space"]["beta"] = 0.02  # one beta: the losses weigh their KL alike
    one_family["search"]["objective"] = {"metric": "val_loss"}
    assert parse_spec(one_family).search.objective.metric == ("val_loss",)


@pytest.mark.parametrize("key, value, likelihood, why", [
    ("beta", {"loguniform": [0.01, 1.0]}, "bernoulli", "the loss weighs its KL term by beta"),
    ("sigma", {"choice": [0.5, 1.0]}, "gaussian", "a Gaussian's negative log-likelihood is scaled by 1/sigma^2"),
])
def test_val_loss_cannot_rank_trials_whose_loss_is_weighed_otherwise(key, value, likelihood, why):
    """A smaller beta (or a larger sigma) lowers the loss whatever the model: a search ranked by it
    would drift to the smallest beta."""
    raw = with_change(f"space.{key}", value)
    raw["space"] = {**raw["space"], "likelihood": likelihood, **({"beta": 0.02} if key != "beta" else {})}
    raw["search"]["objective"] = {"metric": "val_loss"}
    with pytest.raises(SpaceError, match=re.escape(f"search.objective.metric: val_loss cannot rank trials whose "
                                                   f"{key} differs ({why}")):
        parse_spec(raw)
    raw["search"]["objective"] = {"metric": "fid"}
    assert parse_spec(raw).space.top[key] != parse_spec(BASE).space.top.get(key)
    for fixed in (0.5, {"choice": [0.5]}):  # every trial's loss weighed alike
        raw["space"][key] = fixed
        raw["search"]["objective"] = {"metric": "val_loss"}
        assert parse_spec(raw).search.objective.metric == ("val_loss",)


def test_a_sampled_sigma_that_no_likelihood_reads_is_refused():
    raw = with_change("space.sigma", {"loguniform": [0.01, 1.0]})
    raw["space"]["likelihood"] = {"choice": ["bernoulli", "gaussian_learned"]}
    with pytest.raises(SpaceError, match=re.escape("space.sigma: sampled, but likelihood is never 'gaussian'")):
        parse_spec(raw)
    raw["space"]["likelihood"] = {"choice": ["gaussian", "gaussian_learned"]}
    parse_spec(raw)


def test_a_preset_listed_twice_is_refused():
    raw = {"name": "p", "space": {"presets": ["cnn-arch1-M1", "mlp-M1", "cnn-arch1-M1"]}}
    with pytest.raises(SpaceError, match=re.escape("space.presets[2]: 'cnn-arch1-M1' is listed twice")):
        parse_spec(raw)


def test_the_old_name_search_sampler_is_read_as_searcher_with_a_notice():
    raw = copy.deepcopy(BASE)
    raw["search"]["sampler"] = {"n_startup_trials": 7}
    spec = parse_spec(raw)
    assert spec.search.searcher.n_startup_trials == 7 and spec.search.searcher.constant_liar
    [notice] = spec.notices
    assert notice.startswith("search.sampler is deprecated: renamed search.searcher")
    assert parse_spec(BASE).notices == ()
    raw["search"]["searcher"] = {"n_startup_trials": 7}
    with pytest.raises(SpaceError, match=re.escape("search.sampler: renamed search.searcher, which is given too")):
        parse_spec(raw)


def test_an_objective_list_trades_the_score_off_against_size():
    raw = copy.deepcopy(BASE)
    raw["search"]["objective"] = {"metric": ["kid", "params"]}
    objective = parse_spec(raw).search.objective
    assert objective.metric == ("kid", "params") and objective.ranked_by == "kid"
    assert parse_spec(BASE).search.objective.metric == ("fid",)  # one objective stays the default
