"""Compare finished training runs: one Markdown table row per output folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from boneage.errors import InputError
from boneage.evaluation.metrics import errors_by_band, paired_mae_difference
from boneage.inference.modelfile import read_model_metadata


def summarize_evaluation(folder: Path) -> dict:
    """The row of :func:`summarize_run` for a ``boneage evaluate --out`` folder: its MAE and
    predictions (training fields empty), so one model can be compared on any labelled set."""
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
    rows = list(csv.DictReader(open(folder / "predictions.csv")))
    return {
        "run": folder.name, "recipe": summary.get("model_name"), "model": summary.get("model_name"),
        "val_mae": summary.get("mae"), "by_aggregate": {}, "mae_male": summary.get("mae_male"),
        "mae_female": summary.get("mae_female"), "best_epoch": None, "epochs": 0, "train_seconds": None,
        "n_train": None, "n_val": len(rows), "device": None,
        "val_predictions": {r["id"]: (float(r["boneage"]), float(r["predicted"])) for r in rows},
        "val_male": {r["id"]: r["male"] == "True" for r in rows},
    }


def summarize_run(run_dir: str | Path) -> dict:
    """Validation MAE (per aggregation), epochs, time and model of one ``boneage train`` folder,
    or the MAE and predictions of one ``boneage evaluate --out`` folder."""
    run = Path(run_dir)
    model = run / "model.safetensors"
    if not model.is_file() and (run / "predictions.csv").is_file():
        return summarize_evaluation(run)
    if not model.is_file():
        raise InputError("not a finished training run (no model.safetensors) nor an evaluation "
                         "(no predictions.csv)", run)
    recipe, info = read_model_metadata(model)
    history = list(csv.DictReader(open(run / "metrics.csv"))) if (run / "metrics.csv").is_file() else []
    summary = json.loads((run / "val_summary.json").read_text()) if (run / "val_summary.json").is_file() else {}
    preds, male = {}, {}
    if (run / "val_predictions.csv").is_file():
        rows = list(csv.DictReader(open(run / "val_predictions.csv")))
        preds = {r["id"]: (float(r["boneage"]), float(r["predicted"])) for r in rows}
        male = {r["id"]: r["male"] == "True" for r in rows}
    return {
        "run": run.name, "recipe": recipe.name, "model": recipe.model.name,
        "val_mae": info.get("val_mae"), "by_aggregate": info.get("val_mae_by_aggregate", {}),
        "mae_male": summary.get("mae_male"), "mae_female": summary.get("mae_female"),
        "best_epoch": info.get("epoch"), "epochs": len(history),
        "train_seconds": round(sum(float(h["seconds"]) for h in history), 1),
        "n_train": info.get("n_train"), "n_val": info.get("n_val"), "device": info.get("device"),
        "val_predictions": preds, "val_male": male,
    }


def name_runs_uniquely(rows: list[dict], folders: list[str | Path]) -> list[dict]:
    """Rows whose folder names collide (two ``.../heldback`` evaluations) are named by their
    parent folder as well (``old/heldback``), so their tables' columns stay apart."""
    names = [r["run"] for r in rows]
    for row, folder in zip(rows, folders):
        if names.count(row["run"]) > 1:
            path = Path(folder).resolve()
            row["run"] = f"{path.parent.name}/{path.name}"
    return rows


def add_differences(rows: list[dict], n_boot: int = 2000) -> list[dict]:
    """Give every row after the first ``diff_vs_first``: its MAE minus the first run's on the
    same validation images, with a 95 % paired bootstrap interval (None when the two runs
    were validated on different images, or either has no saved predictions).
    """
    ref = rows[0]["val_predictions"] if rows else {}
    for i, row in enumerate(rows):
        preds = row["val_predictions"]
        row["diff_vs_first"] = None
        if i == 0 or not preds or set(preds) != set(ref):
            continue
        ids = sorted(ref)
        row["diff_vs_first"] = paired_mae_difference(
            [preds[k][1] for k in ids], [ref[k][1] for k in ids], [ref[k][0] for k in ids], n_boot=n_boot)
    return rows


def difference_text(d: dict | None) -> str:
    """A paired difference of :func:`add_differences` as table text: ``+1.23 (-0.50 to +2.90)``."""
    return "–" if d is None else f"{d['diff']:+.2f} ({d['low']:+.2f} to {d['high']:+.2f})"


def runs_table(rows: list[dict]) -> str:
    """A Markdown table of :func:`summarize_run` rows."""
    def f(v):
        return "–" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    head = ("| run | model | val MAE | mean of views | median of views | tuned percentile | "
            "MAE male | MAE female | epochs (best) | train s | device | Δ vs first run (95 % CI) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        agg = r["by_aggregate"]
        tuned = next(((k, v) for k, v in agg.items() if k.startswith("percentile_")), None)
        tuned_txt = f"{tuned[1]:.2f} (p{tuned[0].split('_')[1]})" if tuned else "–"
        lines.append(f"| {r['run']} | {r['model']} | {f(r['val_mae'])} | {f(agg.get('mean'))} | "
                     f"{f(agg.get('median'))} | {tuned_txt} | {f(r['mae_male'])} | {f(r['mae_female'])} | "
                     f"{r['epochs']} ({f(r['best_epoch'])}) | {f(r['train_seconds'])} | {f(r['device'])} | "
                     f"{difference_text(r.get('diff_vs_first'))} |")
    return "\n".join(lines)


def band_tables(rows: list[dict]) -> dict[str, list[dict]]:
    """Each run's :func:`~boneage.evaluation.metrics.errors_by_band` rows, on the images
    every run predicted (so the bands hold the same children for every model)."""
    shared = set.intersection(*(set(r["val_predictions"]) for r in rows)) if rows else set()
    if not shared:
        raise InputError("the runs share no predicted images to compare by age band")
    ids = sorted(shared)
    out = {}
    for r in rows:
        preds, male = r["val_predictions"], r["val_male"]
        out[r["run"]] = errors_by_band([preds[k][1] for k in ids], [preds[k][0] for k in ids],
                                       [male[k] for k in ids])
    return out


def bands_table(tables: dict[str, list[dict]]) -> str:
    """A Markdown table of :func:`band_tables`: MAE and mean signed error per band, sex and run."""
    runs = list(tables)
    head = "| sex | band (years) | n | " + " | ".join(f"{r}: MAE | {r}: mean signed" for r in runs) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for i, row in enumerate(tables[runs[0]]):
        cells = []
        for r in runs:
            b = tables[r][i]
            cells.append("–" if b["mae"] is None else f"{b['mae']:.2f}")
            cells.append("–" if b["bias"] is None else f"{b['bias']:+.2f}")
        lines.append(f"| {row['sex']} | {row['band']} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
