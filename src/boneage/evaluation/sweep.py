"""Scaling sweeps: every combination of a grid of recipe settings, trained, resumable, tabulated.

A sweep is a recipe, the overrides every run shares (the one budget they are compared
under), a grid (``key: [values]``, crossed), optional variants (explicit sets of settings,
crossed with the grid: the paper's "remove one block at a time") and the training seeds.
:func:`plan_sweep` turns it into runs and checks every one of them before any training
(a grid key that names no setting, a value the model refuses, an input too small for the
network: one line naming it); :func:`run_sweep` trains them one after another through
:func:`boneage.evaluation.training.fit`, one folder per run, and after each writes ``sweep.md``,
``sweep.csv`` and ``sweep.json``: the form of the BoneAgeNet paper's table 1 (β, repeat
counts, parameters, train and validation MAE, time) with every run's paired difference to
the first run on the same validation images (:func:`boneage.evaluation.runs.add_differences`,
as ``boneage compare`` does).

Interrupted, the same command resumes: finished runs (their ``sweep_run.json``) are kept, an
interrupted one continues from its last checkpoint, the rest start. A run folder holding a
run of another recipe is an error, not silently reused.

A sweep file (YAML)::

    name: m3-step2-scale-width-rsna100
    recipe: ../m3-boneagenet-baseline-rsna100.yaml   # relative to the sweep file
    overrides: {train.epochs: 30}                     # shared by every run
    grid: {model.options.width: [0.35, 0.5, 0.7]}
    variants: [{}, {model.options.extra_fc: true}]    # optional
    seeds: [0, 1]                                     # train.seed of each run
    train_mae_images: 1000                            # training images for train MAE (0: none)

"Train MAE" is measured after training on up to ``train_mae_images`` training images drawn
once (seed 0), in eval mode through the recipe's inference views: unlike Keras's running
training MAE, without augmentation or dropout.
"""

from __future__ import annotations

import copy
import csv
import difflib
import itertools
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from boneage.config import Recipe, load_recipe
from boneage.data.datasets import PreprocessedCache
from boneage.data.labels import load_samples
from boneage.data.split import train_val_split
from boneage.engine.trainer import CHECKPOINT, MODEL_FILE, resolve_device
from boneage.errors import ConfigError, InputError
from boneage.evaluation.runs import difference_text, add_differences, summarize_run
from boneage.evaluation.training import check_recipe, fit
from boneage.fileutils import atomic_path
from boneage.inference.batch import predict_cached
from boneage.inference.torch_model import build_model, load_model_file
from boneage.losses import LOSSES
from boneage.models.inception_v3_scaled import BASELINE_REPEATS
from boneage.models.registry import MODELS
from boneage.registry import _parameters

logger = logging.getLogger(__name__)

#: Keys of a sweep file.
SWEEP_KEYS = ("name", "description", "recipe", "overrides", "grid", "variants", "seeds", "train_mae_images")
#: Settings that make up the shared budget: the same for every run of a sweep.
BUDGET_KEYS = ("train.epochs", "train.max_steps_per_epoch", "train.early_stopping")
#: The file a finished run leaves in its folder (what a resumed sweep skips).
RUN_MARKER = "sweep_run.json"
DEFAULT_TRAIN_MAE_IMAGES = 1000


@dataclass
class Sweep:
    """What to run: the recipe, shared overrides, grid, variants and seeds."""

    recipe: Path
    name: str
    description: str = ""
    overrides: list[str] = field(default_factory=list)
    grid: dict[str, list] = field(default_factory=dict)
    variants: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    seeds: list[int] | None = None
    train_mae_images: int = DEFAULT_TRAIN_MAE_IMAGES

    def to_dict(self) -> dict:
        """The sweep as a sweep file would say it (the recipe path as given)."""
        return {"name": self.name, "description": self.description, "recipe": str(self.recipe),
                "overrides": list(self.overrides), "grid": copy.deepcopy(self.grid),
                "variants": copy.deepcopy(self.variants), "seeds": self.seeds,
                "train_mae_images": self.train_mae_images}


@dataclass
class SweepRun:
    """One run of a sweep: its folder name, the settings it varies, its seed and recipe."""

    run: str
    settings: dict[str, Any]
    seed: int
    overrides: list[str]
    recipe: Any  # boneage.config.Recipe


# -- reading ---------------------------------------------------------------------------------

def _override_text(key: str, value: Any) -> str:
    # JSON is YAML: apply_overrides parses it back to the same value.
    return f"{key}={json.dumps(value)}"


def _overrides_list(value, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [_override_text(k, v) for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value):
        return list(value)
    raise ConfigError(f"{where}: overrides must be a mapping of key: value or a list of 'key=value', got {value!r}")


def _check_seeds(seeds, where: str) -> list[int]:
    if (not isinstance(seeds, list) or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)):
        raise ConfigError(f"{where}: seeds must be a list of whole numbers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: seeds repeat, got {seeds!r}")
    return list(seeds)


def _check_grid(grid, where: str) -> dict[str, list]:
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}: grid must be a mapping of key: [values], got {grid!r}")
    out = {}
    for key, values in grid.items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ConfigError(f"{where}: grid key {key!r} has no values")
        out[str(key)] = values
    return out


def read_sweep(path: str | os.PathLike) -> Sweep:
    """A sweep file (see the module docstring); its recipe path is taken relative to it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: sweep file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid YAML sweep file ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or "recipe" not in data:
        raise ConfigError(f"{path}: a sweep file is a mapping with a recipe: key")
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown} in the sweep file; valid keys: {list(SWEEP_KEYS)}")
    recipe = Path(data["recipe"])
    if not recipe.is_absolute():
        recipe = path.parent / recipe
    variants = data.get("variants") or [{}]
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise ConfigError(f"{path}: variants must be a list of mappings of key: value, got {variants!r}")
    images = data.get("train_mae_images", DEFAULT_TRAIN_MAE_IMAGES)
    if isinstance(images, bool) or not isinstance(images, int) or images < 0:
        raise ConfigError(f"{path}: train_mae_images must be a whole number >= 0, got {images!r}")
    return Sweep(recipe=recipe, name=str(data.get("name") or path.stem),
                 description=str(data.get("description") or ""),
                 overrides=_overrides_list(data.get("overrides"), str(path)),
                 grid=_check_grid(data.get("grid") or {}, str(path)), variants=variants,
                 seeds=None if data.get("seeds") is None else _check_seeds(data["seeds"], str(path)),
                 train_mae_images=images)


def is_sweep_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a sweep file (a YAML mapping with ``recipe:``) rather than a recipe."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "recipe" in data


def parse_grid_option(text: str) -> tuple[str, list]:
    """``KEY=V1,V2,...`` (each value YAML, e.g. ``model.options.repeats=[2,1,2],[4,3,3]``)."""
    if "=" not in text or not text.split("=", 1)[0].strip():
        raise InputError(f"--grid {text!r} must look like KEY=V1,V2,... (e.g. model.options.width=0.7,1.0,1.4)")
    key, raw = text.split("=", 1)
    try:
        values = yaml.safe_load(f"[{raw}]")
    except yaml.YAMLError:
        raise InputError(f"--grid {text!r}: the values are not valid YAML (lists in brackets: [2,1,2],[4,3,3])") from None
    if not values:
        raise InputError(f"--grid {text!r} gives no values")
    return key.strip(), values


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` as a list of seeds."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--seeds must be comma-separated whole numbers, got {text!r}") from None
    try:
        return _check_seeds(seeds, "--seeds")
    except ConfigError as exc:
        raise InputError(str(exc)) from None


# -- planning --------------------------------------------------------------------------------

def check_key(recipe, key: str) -> None:
    """ConfigError unless ``key`` names a setting of ``recipe`` (a section key, or an option
    the recipe's model or loss builder takes)."""
    node: Any = recipe.to_dict()
    parts = key.split(".")
    for i, part in enumerate(parts):
        here = ".".join(parts[:i]) or "the recipe"
        if i == 2 and parts[0] in ("model", "loss") and parts[1] == "options":
            registry = _builders(parts[0])
            name = getattr(recipe, parts[0]).name
            allowed = [p for p in (_parameters(registry.get(name)) or []) if p != "in_chans"]
            if part not in allowed and part not in node:
                raise ConfigError(f"grid key {key!r} does not exist: {parts[0]} {name!r} takes no option "
                                  f"{part!r}{_suggest(part, allowed)}; its options: {allowed}")
            if len(parts) > 3:
                raise ConfigError(f"grid key {key!r} does not exist: set the whole option {'.'.join(parts[:3])}")
            return
        if not isinstance(node, dict):
            raise ConfigError(f"grid key {key!r} does not exist: {here} is a value, not a section "
                              f"(set {here} as a whole)")
        if part not in node:
            raise ConfigError(f"grid key {key!r} does not exist: {here} has no {part!r}"
                              f"{_suggest(part, list(node))}; its keys: {sorted(node)}")
        node = node[part]


def _builders(section: str):
    return MODELS if section == "model" else LOSSES


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _value_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "-".join(_value_text(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "-".join(f"{k}{_value_text(v)}" for k, v in value.items())
    return str(value)


def _run_name(settings: dict[str, Any], seed: int) -> str:
    shorts = [k.rsplit(".", 1)[-1] for k in settings]
    labels = [k if shorts.count(s) > 1 else s for k, s in zip(settings, shorts)]
    parts = [f"{label}{_value_text(v)}" for label, v in zip(labels, settings.values())]
    name = "_".join(parts + [f"seed{seed}"]) if parts else f"base_seed{seed}"
    return re.sub(r"[^A-Za-z0-9._=-]+", "", name)


def plan_sweep(sweep: Sweep, *, check: bool = True) -> list[SweepRun]:
    """The runs of ``sweep``, in order (variants × grid × seeds), each recipe validated and
    (``check``) run once on a synthetic radiograph, all before any training."""
    base = load_recipe(sweep.recipe, sweep.overrides)
    keys = list(dict.fromkeys([k for v in sweep.variants for k in v] + list(sweep.grid)))
    for key in keys:
        if key in BUDGET_KEYS:
            raise ConfigError(f"grid key {key!r}: the runs of a sweep share one budget; set it in the "
                              f"sweep's overrides (or on the command line), not per run")
        if key == "train.seed":
            raise ConfigError("grid key 'train.seed': give the seeds with seeds: (or --seeds)")
        check_key(base, key)
    seeds = sweep.seeds if sweep.seeds is not None else [base.train.seed]
    runs: list[SweepRun] = []
    checked: set[str] = set()
    for variant in sweep.variants:
        for values in itertools.product(*sweep.grid.values()):
            settings = {**variant, **dict(zip(sweep.grid, values))}
            for seed in seeds:
                name = _run_name(settings, seed)
                overrides = (list(sweep.overrides) + [_override_text(k, v) for k, v in settings.items()]
                             + [f"train.seed={seed}", f"name={base.name}--{name}"])
                try:
                    recipe = load_recipe(sweep.recipe, overrides)
                    key = json.dumps({k: v for k, v in recipe.method_dict().items() if k not in ("train", "name")},
                                     sort_keys=True)
                    if check and key not in checked:
                        check_recipe(recipe)
                        checked.add(key)
                except ConfigError as exc:
                    raise ConfigError(f"sweep run {name}: {exc}") from None
                runs.append(SweepRun(name, settings, seed, overrides, recipe))
    names = [r.run for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"sweep runs {twice} have the same settings twice; make the variants differ")
    return runs


# -- running ---------------------------------------------------------------------------------

def _count_parameters(recipe) -> int:
    with torch.device("meta"):  # counted without allocating the weights
        model = build_model(recipe, **({"pretrained": None} if "pretrained" in recipe.model.options else {}))
    return int(sum(p.numel() for p in model.parameters()))


def train_mae(model_path: Path, samples, n_images: int, device: str = "cpu") -> tuple[float | None, int]:
    """MAE of a trained model file on up to ``n_images`` of its training images (drawn with
    seed 0 from the recipe's split), in eval mode through its inference views, and how many
    images that was: ``(None, 0)`` for ``n_images=0``."""
    if n_images <= 0:
        return None, 0
    model, recipe, _ = load_model_file(model_path, device)
    train_idx, _ = train_val_split(len(samples), recipe.data.val_fraction, recipe.data.split_seed)
    pick = np.sort(np.random.default_rng(0).choice(train_idx, size=min(n_images, len(train_idx)), replace=False))
    chosen = [samples[i] for i in pick]
    cache = PreprocessedCache(chosen, recipe)
    preds, _ = predict_cached(model, recipe, cache, range(len(chosen)), device, recipe.train.batch_size)
    return float(np.mean(np.abs(preds - np.array([s.boneage for s in chosen])))), len(chosen)


def _same_recipe(stored: dict, recipe) -> bool:
    try:
        return Recipe.from_dict(stored).method_dict() == recipe.method_dict()
    except ConfigError:
        return False


def run_sweep(sweep: Sweep, out: str | os.PathLike, *, progress: bool = True, log=None) -> list[dict]:
    """Train every run of ``sweep`` into ``out/<run>/`` (skipping finished ones, resuming an
    interrupted one) and write the tables after each; returns the table rows."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("boneage sweep runs its trainings in one process; start it without torchrun")
    log = log or logger.info
    out = Path(out)
    runs = plan_sweep(sweep)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "sweep.json", {"sweep": sweep.to_dict(), "runs": [r.run for r in runs]})
    data_cache: dict[tuple, list] = {}
    for i, r in enumerate(runs, 1):
        folder = out / r.run
        marker = folder / RUN_MARKER
        if marker.is_file():
            stored = json.loads(marker.read_text())
            if not _same_recipe(stored.get("recipe", {}), r.recipe):
                raise InputError("holds a finished run of another recipe than this sweep's; remove it or "
                                 "choose another --out", folder)
            log(f"[{i}/{len(runs)}] {r.run}: finished before, kept")
            continue
        d = r.recipe.data
        key = (d.root, d.csv, d.image_dir, d.limit)
        if key not in data_cache:
            data_cache[key] = load_samples(d.root or None, d.csv, d.image_dir, d.limit)
        samples = data_cache[key]
        resume = (folder / CHECKPOINT).is_file()
        log(f"[{i}/{len(runs)}] {r.run}: {'resuming' if resume else 'training'}")
        # A folder without a checkpoint (killed before its first epoch ended) starts afresh.
        fit(r.recipe, folder, resume=resume, overwrite=not resume and folder.exists(),
            progress=progress, samples=samples, log=log)
        mae, used = train_mae(folder / MODEL_FILE, samples, sweep.train_mae_images,
                              str(resolve_device(r.recipe.train.device)))
        facts = {"run": r.run, "settings": r.settings, "seed": r.seed, "overrides": r.overrides,
                 "parameters": _count_parameters(r.recipe), "train_mae": mae, "train_mae_images": used,
                 "recipe": r.recipe.to_dict()}
        _write_json(marker, facts)
        write_sweep_tables(sweep, runs, out)
    return write_sweep_tables(sweep, runs, out)


def _write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")


# -- tables ----------------------------------------------------------------------------------

def _architecture(recipe) -> tuple[float | None, list | None]:
    """(β, repeat counts) of a scaled Inception-v3 recipe, the builder's defaults filled in."""
    if recipe.model.name != "inception_v3_scaled":
        return None, None
    o = recipe.model.options
    return float(o.get("width", 1.0)), list(o.get("repeats", BASELINE_REPEATS))


def sweep_rows(runs: list[SweepRun], out: Path) -> list[dict]:
    """One row per finished run (in sweep order), with the paired difference to the first."""
    rows = []
    for r in runs:
        marker = out / r.run / RUN_MARKER
        if not marker.is_file():
            continue
        facts = json.loads(marker.read_text())
        row = summarize_run(out / r.run)
        width, repeats = _architecture(r.recipe)
        row.update(run=r.run, settings=r.settings, seed=r.seed, width=width, repeats=repeats,
                   parameters=facts["parameters"], train_mae=facts["train_mae"])
        rows.append(row)
    return add_differences(rows)


_SHOWN_AS_COLUMNS = ("model.options.width", "model.options.repeats")


def _f(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _setting_keys(runs: list[SweepRun]) -> list[str]:
    return [k for k in dict.fromkeys(k for r in runs for k in r.settings) if k not in _SHOWN_AS_COLUMNS]


def format_sweep_markdown(sweep: Sweep, runs: list[SweepRun], rows: list[dict]) -> str:
    """Table 1 of the paper for this sweep: one row per run, then the mean over seeds."""
    base = runs[0].recipe if runs else None
    keys = _setting_keys(runs)
    arch = any(r["width"] is not None for r in rows)
    lines = [f"# Sweep {sweep.name}", ""]
    if sweep.description:
        lines += [sweep.description, ""]
    if base is not None:
        t = base.train
        steps = f", at most {t.max_steps_per_epoch} steps per epoch" if t.max_steps_per_epoch else ""
        lines += [f"Recipe `{sweep.recipe}`" + (f" with {', '.join(f'`{o}`' for o in sweep.overrides)}"
                                                if sweep.overrides else "") + ".",
                  f"Budget of every run: {t.epochs} epochs{steps}, batch {t.batch_size}"
                  + (f", early stopping after {t.early_stopping}" if t.early_stopping else "") + ".",
                  f"Validation: {rows[0]['n_val'] if rows else '?'} images (split seed {base.data.split_seed}); "
                  f"train MAE on up to {sweep.train_mae_images} training images in eval mode "
                  "(no augmentation, no dropout). Δ: the run's validation MAE minus the first run's on "
                  "the same images, with a 95 % paired bootstrap interval. Time: the sum of the epochs.",
                  f"Finished: {len(rows)} of {len(runs)} runs.", ""]
    head = ["run"] + (["β", "n.Mixed5", "n.Mixed7", "n.Mixed9"] if arch else []) + keys + \
        ["seed", "parameters", "train MAE", "val MAE", "Δ val MAE vs first (95 % CI)", "epochs (best)", "train s"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["run"]]
        if arch:
            reps = row["repeats"] or ["–"] * 3
            cells += [_f(row["width"]), *map(str, reps)]
        cells += [_value_text(row["settings"].get(k, "–")) for k in keys]
        cells += [str(row["seed"]), f"{row['parameters'] / 1e6:.2f}M", _f(row["train_mae"]), _f(row["val_mae"]),
                  difference_text(row.get("diff_vs_first")), f"{row['epochs']} ({_f(row['best_epoch'])})",
                  _f(row["train_seconds"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    groups = _by_settings(rows)
    if any(len(g) > 1 for g in groups.values()):
        lines += ["", "Mean over seeds:", ""]
        head = (["β", "repeats"] if arch else []) + keys + \
            ["seeds", "parameters", "train MAE", "val MAE (mean ± SD)", "train s"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for group in groups.values():
            first = group[0]
            val = [g["val_mae"] for g in group if g["val_mae"] is not None]
            trn = [g["train_mae"] for g in group if g["train_mae"] is not None]
            cells = ([_f(first["width"]), "/".join(map(str, first["repeats"] or []))] if arch else [])
            cells += [_value_text(first["settings"].get(k, "–")) for k in keys]
            sd = f" ± {np.std(val, ddof=1):.2f}" if len(val) > 1 else ""
            cells += [",".join(str(g["seed"]) for g in group), f"{first['parameters'] / 1e6:.2f}M",
                      _f(float(np.mean(trn))) if trn else "–",
                      (f"{np.mean(val):.2f}{sd}" if val else "–"),
                      _f(float(np.mean([g["train_seconds"] for g in group])), 1)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _by_settings(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(json.dumps(row["settings"], sort_keys=True), []).append(row)
    return groups


def write_sweep_tables(sweep: Sweep, runs: list[SweepRun], out: Path) -> list[dict]:
    """``sweep.md``, ``sweep.csv`` and ``sweep.json`` of the finished runs; returns the rows."""
    rows = sweep_rows(runs, out)
    with atomic_path(out / "sweep.md") as tmp:
        Path(tmp).write_text(format_sweep_markdown(sweep, runs, rows))
    keys = _setting_keys(runs)
    fields = ["run", "width", "repeats", *keys, "seed", "parameters", "train_mae", "val_mae",
              "diff_vs_first", "diff_low", "diff_high", "best_epoch", "epochs", "train_seconds", "n_train", "n_val"]
    with atomic_path(out / "sweep.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for row in rows:
            d = row.get("diff_vs_first") or {}
            w.writerow({"run": row["run"], "width": row["width"],
                        "repeats": "/".join(map(str, row["repeats"])) if row["repeats"] else "",
                        **{k: json.dumps(row["settings"][k]) if k in row["settings"] else "" for k in keys},
                        "seed": row["seed"], "parameters": row["parameters"], "train_mae": row["train_mae"],
                        "val_mae": row["val_mae"], "diff_vs_first": d.get("diff"), "diff_low": d.get("low"),
                        "diff_high": d.get("high"), "best_epoch": row["best_epoch"], "epochs": row["epochs"],
                        "train_seconds": row["train_seconds"], "n_train": row["n_train"], "n_val": row["n_val"]})
    _write_json(out / "sweep.json", {"sweep": sweep.to_dict(), "runs": [r.run for r in runs],
                                     "rows": [{k: v for k, v in row.items() if k != "val_predictions"}
                                              for row in rows]})
    return rows
