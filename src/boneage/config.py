"""Typed recipes: everything a method is, loaded from YAML, stored inside every model file.

A recipe names the preprocessing, augmentation, patching, model, loss, optimiser, schedule,
training budget and inference aggregation. Sections are pydantic models that forbid unknown
keys, so a typo in a config file fails loudly instead of silently falling back to a default.
A recipe file may start from another with ``base: other.yaml`` and override a few keys;
``key.sub=value`` overrides from the command line go on top.

Three kinds of setting live here and are kept apart where it matters:

- the method (everything that changes what is learned);
- run settings (:data:`RUN_SETTINGS`: where the data lies, device, workers, mixed precision),
  which a resumed run may change and a model file does not store;
- what training learned (``target`` scaling, a tuned percentile), filled in by training.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from boneage.errors import ConfigError


class _Section(BaseModel):
    """A recipe section: unknown keys are errors; assignment is validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the labelled images are and how they are split."""

    root: str = ""                 # folder with labels.csv + images/ (the ../shared/data layout)
    csv: str | None = None         # RSNA CSV (any of the three layouts); overrides root/labels.csv
    image_dir: str | None = None   # folder of <id>.png; default root/images
    mask_dir: str | None = None    # task segmentation: folder of <id>.png hand masks; default root/masks
    val_fraction: float = 0.1
    split_seed: int = 0
    limit: int | None = None       # use only the first N rows (quick experiments)


class AugmentConfig(_Section):
    """Training-time augmentation: steps applied in order, or one step chosen uniformly."""

    mode: str = "sequential"       # "sequential" | "one_of"
    steps: list[Any] = Field(default_factory=list)


class PatchConfig(_Section):
    """Regular grid of n overlapping square patches; training samples patches per epoch."""

    n: int = 25
    size: int = 224
    samples_per_epoch: int | None = None   # None: every patch of every image once per epoch


class ModelConfig(_Section):
    """Registry name and options passed to :func:`boneage.models.create_model`."""

    name: str = "resnet18"
    options: dict[str, Any] = Field(default_factory=dict)


class LossConfig(_Section):
    name: str = "mse"
    options: dict[str, Any] = Field(default_factory=dict)


class OptimConfig(_Section):
    name: str = "adam"             # adam | adamw | rmsprop
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = None  # max global gradient norm


class ScheduleConfig(_Section):
    name: str = "none"             # none | step | plateau | cosine | inverse_time
    step_size: int = 10            # epochs between decays (step)
    gamma: float = 0.1             # decay factor (step, plateau)
    patience: int = 3              # epochs without improvement before decay (plateau)
    min_lr: float = 1e-6
    decay: float = 0.0             # inverse_time: lr / (1 + decay * epochs since the optimiser was built)


#: Values of ``train.amp``: off, the device's best choice, or one reduced precision.
AMP_CHOICES = (False, True, "bf16", "fp16")


class TrainConfig(_Section):
    """The training budget and its randomness. ``device``, ``num_workers``, ``amp`` and
    ``channels_last`` say where and how a run executes, not what it learns: resume accepts
    other values for them. ``batch_size`` is the global batch: under ``torchrun`` each of N
    processes takes ``batch_size / N`` of it, so a recipe means the same optimisation on any
    number of GPUs."""

    epochs: int = 10
    batch_size: int = 32
    early_stopping: int | None = None   # stop after this many epochs without val MAE improvement
    seed: int = 0
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    num_workers: int = 0
    # Mixed precision: false | true (CUDA: bf16 where the GPU has it, else fp16; CPU: off) |
    # bf16 | fp16 (fp16 with a gradient scaler, stored in checkpoints).
    amp: bool | str = False
    channels_last: bool = False    # NHWC memory format for the networks and their inputs
    # Within an epoch, write a checkpoint this often (minutes of wall time; 0: only at the end
    # of each epoch), so a stopped CPU run of many hours loses at most this much.
    checkpoint_minutes: float = Field(default=15.0, ge=0)
    max_steps_per_epoch: int | None = None
    init_from: str | None = None   # model file whose weights start this run (fine-tuning)
    # Before each validation, recompute BatchNorm statistics over this many training batches
    # (0: keep the running averages, which lag the weights under a high constant lr).
    bn_recalibration_batches: int = 0
    sampler: str = "shuffle"       # shuffle | balanced (each 12-month age bin equally often)
    sampler_options: dict[str, Any] = Field(default_factory=dict)  # e.g. balanced: {bin_months: 6}

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_choice(cls, value: Any) -> bool | str:
        if isinstance(value, bool) or (isinstance(value, str) and value in AMP_CHOICES):
            return value
        raise ValueError("must be false, true (the device's best choice), bf16 or fp16")


class TargetConfig(_Section):
    """Bone age is regressed as (months - mean) / std; filled in from the training labels."""

    mean: float | None = None
    std: float | None = None


class InferenceConfig(_Section):
    aggregate: str = "median"      # mean | median | percentile (over patches / TTA views)
    percentile: float = 50.0
    flip_tta: bool = False
    tta_angles: list[float] = Field(default_factory=list)  # extra rotated views, degrees
    tta_border: str = "constant"   # corners of rotated views: constant (black) | replicate | reflect
    tune_percentile: bool = False  # after training, pick the percentile minimising validation MAE
    # Further preprocessing pipelines (each a list of steps like `preprocess`); the views of
    # every distinct copy they make are pooled with those of `preprocess` before aggregating.
    preprocess_views: list[list[Any]] = Field(default_factory=list)


class GanConfig(_Section):
    """The pix2pix enhancement task (``task: gan``, :mod:`boneage.enhancement`): network
    sizes, the weight of L1 beside the adversarial loss, and how training pairs are made.

    Each training target is a radiograph after ``preprocess`` and ``augment`` (flips and
    rotations act on the pair alike); its input is a copy degraded by the ``degrade`` steps
    (contrast, brightness, blur, noise), drawn anew each epoch. ``synthetic`` adds that many
    synthetic radiographs as further targets.
    """

    generator: dict[str, Any] = Field(default_factory=lambda: {"base": 16, "depth": 3})
    discriminator: dict[str, Any] = Field(default_factory=lambda: {"base": 16})
    l1_weight: float = 100.0
    degrade: list[Any] = Field(default_factory=lambda: [
        {"name": "window", "shift": 0.25, "p": 0.9},
        {"name": "gamma", "gamma_min": 0.6, "gamma_max": 1.6, "p": 0.8},
        {"name": "blur", "sigma_min": 0.3, "sigma_max": 1.5, "p": 0.6},
        {"name": "noise", "std_min": 0.005, "std_max": 0.04, "p": 0.6},
    ])
    synthetic: int = 0
    synthetic_seed: int = 0


class PhasesConfig(_Section):
    """Paced transfer learning (:mod:`boneage.engine.phases`): the new head trains first, then
    the network's named stages are unfrozen one at a time in ``order``, each when the
    ``monitor`` ed loss of the current phase has not improved by more than ``threshold``
    (relative) for ``patience`` epochs. The first ``unfrozen`` stages of ``order`` train from
    the first epoch; ``paced: false`` unfreezes no more (``unfrozen: 0``: a frozen backbone)."""

    order: list[str] | None = None  # a permutation of the stages; None: the model's, top first
    unfrozen: int = 0
    paced: bool = True
    patience: int = 2
    threshold: float = 0.01
    monitor: str = "train_loss"     # a metrics column (the training loss, as the paper does)
    network: str = "model"          # which of the task's networks has the stages


#: Keys that say where and how a run executes rather than what the method is.
RUN_SETTINGS: dict[str, tuple[str, ...]] = {
    "data": ("root", "csv", "image_dir", "mask_dir"),
    "train": ("device", "num_workers", "amp", "channels_last", "checkpoint_minutes"),
}


class Recipe(_Section):
    """One runnable method: data → preprocessing → model → loss → training → inference."""

    name: str = "unnamed"
    description: str = ""
    task: str = "regression"       # what the loop trains (boneage.engine.tasks.TASKS)
    data: DataConfig = Field(default_factory=DataConfig)
    preprocess: list[Any] = Field(default_factory=list)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    # The canonical preparation: deterministic steps applied after augmentation at training
    # and to every view at inference, so both reach the network through the same final
    # filter whatever happened to the image before.
    canonical: list[Any] = Field(default_factory=list)
    patches: PatchConfig | None = None
    # Network input = (image - input_mean) / input_std, gray replicated to ``channels``; None
    # takes what the model declares (boneage.models.InputSpec), filled in by training.
    channels: int | None = None
    input_mean: float | None = None
    input_std: float | None = None
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    phases: PhasesConfig | None = None   # paced unfreezing of the model's stages (None: all train)
    target: TargetConfig = Field(default_factory=TargetConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    gan: GanConfig | None = None   # task: gan only (boneage.enhancement)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def input_spec(self) -> tuple[int, float, float]:
        """(channels, mean, std) of the network input: the recipe's, else the model's own."""
        if None not in (self.channels, self.input_mean, self.input_std):
            # written out (as in an ONNX export): no model registry, which is PyTorch code
            return self.channels, self.input_mean, self.input_std
        # boundary: the model registry is PyTorch code; a recipe whose spec is written out (an
        # ONNX export's, the light install's) never reaches it.
        from boneage.models.registry import model_input_spec

        spec = model_input_spec(self.model.name, self.model.options)
        return (spec.channels if self.channels is None else self.channels,
                spec.mean if self.input_mean is None else self.input_mean,
                spec.std if self.input_std is None else self.input_std)

    def method_dict(self) -> dict[str, Any]:
        """The recipe without its run settings (where the data lies, device, worker count,
        mixed precision, memory format): what must match for a checkpoint to resume."""
        d = self.to_dict()
        for key in RUN_SETTINGS["data"]:
            d["data"].pop(key)
        for key in RUN_SETTINGS["train"]:
            d["train"].pop(key)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        """Validate a mapping (e.g. parsed YAML): unknown keys and wrong types are one-line
        :class:`ConfigError` s naming the key."""
        if not isinstance(data, dict):
            raise ConfigError(f"a recipe must be a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    """The first problem of a pydantic error, as ``recipe.key.sub: message (got value)``."""
    err = exc.errors()[0]
    where = ".".join(["recipe", *(str(p) for p in err["loc"])])
    if err["type"] == "extra_forbidden":
        keys = _section_keys(err["loc"][:-1])
        valid = f"; valid keys: {keys}" if keys else ""
        return f"unknown key {err['loc'][-1]!r} in {where.rsplit('.', 1)[0]}{valid}"
    value = err.get("input")
    got = f" (got {value!r})" if not isinstance(value, (dict, list)) else ""
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    # A validator's own ValueError already says what is allowed; pydantic's prefix adds nothing.
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}{got}{more}"


def _section_keys(loc: tuple) -> list[str] | None:
    """The keys of the recipe section at ``loc`` (a pydantic error location), if it is one."""
    import typing

    model: Any = Recipe
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        hint = field.annotation
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return None
    return sorted(model.model_fields)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a recipe is YAML)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys, got {type(data).__name__}")
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_recipe_data(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe file as a mapping, with its ``base:`` chain merged in (paths relative to the
    file that names them)."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _seen:
        chain = " -> ".join(p.name for p in (*_seen, resolved))
        raise ConfigError(f"{path}: recipes name each other as base in a loop ({chain})")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a file name, got {base!r}")
    base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
    if not base_path.is_file():
        raise ConfigError(f"{path}: base recipe {base} not found (looked at {base_path})")
    return merge(read_recipe_data(base_path, (*_seen, resolved)), data)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe (and its ``base:`` chain) and apply ``key.sub=value`` overrides."""
    path = Path(path)
    data = apply_overrides(read_recipe_data(path), overrides or [])
    try:
        return Recipe.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b.c=value`` set (value parsed as YAML)."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.subkey=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: the value is not valid YAML") from None
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
