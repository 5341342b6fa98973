"""Typed recipes: everything a method is, loaded from YAML, stored inside every model file.

A recipe names the preprocessing, augmentation, patching, model, loss, optimiser, schedule,
training budget and inference aggregation. Unknown keys are rejected so that a typo in a
config file fails loudly instead of silently falling back to a default.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from boneage.errors import ConfigError


@dataclass
class DataConfig:
    """Where the labelled images are and how they are split."""

    root: str = ""                 # folder with labels.csv + images/ (the ../shared/data layout)
    csv: str | None = None         # RSNA CSV (any of the three layouts); overrides root/labels.csv
    image_dir: str | None = None   # folder of <id>.png; default root/images
    val_fraction: float = 0.1
    split_seed: int = 0
    limit: int | None = None       # use only the first N rows (quick experiments)


@dataclass
class AugmentConfig:
    """Training-time augmentation: steps applied in order, or one step chosen uniformly."""

    mode: str = "sequential"       # "sequential" | "one_of"
    steps: list[Any] = field(default_factory=list)


@dataclass
class PatchConfig:
    """Regular grid of n overlapping square patches; training samples patches per epoch."""

    n: int = 25
    size: int = 224
    samples_per_epoch: int | None = None   # None: every patch of every image once per epoch


@dataclass
class ModelConfig:
    """Registry name and options passed to :func:`boneage.models.create_model`."""

    name: str = "resnet18"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    name: str = "mse"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "adam"             # adam | adamw | rmsprop
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = None  # max global gradient norm


@dataclass
class ScheduleConfig:
    name: str = "none"             # none | step | plateau | cosine
    step_size: int = 10            # epochs between decays (step)
    gamma: float = 0.1             # decay factor (step, plateau)
    patience: int = 3              # epochs without improvement before decay (plateau)
    min_lr: float = 1e-6


@dataclass
class TrainConfig:
    """The training budget and its randomness. ``device``, ``num_workers`` and ``amp`` say
    where a run executes, not what it learns: resume accepts other values for them."""

    epochs: int = 10
    batch_size: int = 32
    early_stopping: int | None = None   # stop after this many epochs without val MAE improvement
    seed: int = 0
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    num_workers: int = 0
    amp: bool = False              # mixed precision on CUDA
    max_steps_per_epoch: int | None = None
    init_from: str | None = None   # model file whose weights start this run (fine-tuning)
    # Before each validation, recompute BatchNorm statistics over this many training batches
    # (0: keep the running averages, which lag the weights under a high constant lr).
    bn_recalibration_batches: int = 0
    sampler: str = "shuffle"       # shuffle | balanced (each 12-month age bin equally often)


@dataclass
class TargetConfig:
    """Bone age is regressed as (months - mean) / std; filled in from the training labels."""

    mean: float | None = None
    std: float | None = None


@dataclass
class InferenceConfig:
    aggregate: str = "median"      # mean | median | percentile (over patches / TTA views)
    percentile: float = 50.0
    flip_tta: bool = False
    tta_angles: list[float] = field(default_factory=list)  # extra rotated views, degrees
    tune_percentile: bool = False  # after training, pick the percentile minimising validation MAE


#: Keys that say where and how a run executes rather than what the method is.
RUN_SETTINGS: dict[str, tuple[str, ...]] = {
    "data": ("root", "csv", "image_dir"),
    "train": ("device", "num_workers", "amp"),
}


@dataclass
class Recipe:
    """One runnable method: data → preprocessing → model → loss → training → inference."""

    name: str = "unnamed"
    description: str = ""
    task: str = "regression"       # what the loop trains (boneage.engine.tasks.TASKS)
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: list[Any] = field(default_factory=list)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # The canonical preparation: deterministic steps applied after augmentation at training
    # and to every view at inference, so both reach the network through the same final
    # filter whatever happened to the image before.
    canonical: list[Any] = field(default_factory=list)
    patches: PatchConfig | None = None
    channels: int = 1              # gray replicated to this many channels for the backbone
    input_mean: float = 0.0        # network input = (image - input_mean) / input_std, after augmentation
    input_std: float = 1.0
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def method_dict(self) -> dict[str, Any]:
        """The recipe without its run settings (where the data lies, device, worker count,
        mixed precision): what must match for a checkpoint to resume."""
        d = self.to_dict()
        for key in RUN_SETTINGS["data"]:
            d["data"].pop(key)
        for key in RUN_SETTINGS["train"]:
            d["train"].pop(key)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        return _build(cls, data, "recipe")


def _build(cls: type, data: Any, where: str):
    """Recursively build dataclass ``cls`` from a mapping, rejecting unknown keys."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where} may not be null")
        non_none = [a for a in args if a is not type(None)]
        return _coerce(non_none[0], value, where) if len(non_none) == 1 else value
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if hint is float and not isinstance(value, float):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    return value


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe and apply ``key.sub=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    data = apply_overrides(data, overrides or [])
    try:
        return Recipe.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b.c=value`` set (value parsed as YAML)."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.subkey=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return data
