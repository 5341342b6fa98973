"""Compare finished training runs: one Markdown table row per output folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from boneage.errors import InputError


def summarize_run(run_dir: str | Path) -> dict:
    """Validation MAE (per aggregation), epochs, time and model of one ``boneage train`` folder."""
    from boneage.inference.modelfile import read_model_metadata

    run = Path(run_dir)
    model = run / "model.safetensors"
    if not model.is_file():
        raise InputError("not a finished training run (no model.safetensors)", run)
    recipe, info = read_model_metadata(model)
    history = list(csv.DictReader(open(run / "metrics.csv"))) if (run / "metrics.csv").is_file() else []
    summary = json.loads((run / "val_summary.json").read_text()) if (run / "val_summary.json").is_file() else {}
    return {
        "run": run.name, "recipe": recipe.name, "model": recipe.model.name,
        "val_mae": info.get("val_mae"), "by_aggregate": info.get("val_mae_by_aggregate", {}),
        "mae_male": summary.get("mae_male"), "mae_female": summary.get("mae_female"),
        "best_epoch": info.get("epoch"), "epochs": len(history),
        "train_seconds": round(sum(float(h["seconds"]) for h in history), 1),
        "n_train": info.get("n_train"), "n_val": info.get("n_val"), "device": info.get("device"),
    }


def runs_table(rows: list[dict]) -> str:
    """A Markdown table of :func:`summarize_run` rows."""
    def f(v):
        return "–" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    head = ("| run | model | val MAE | mean of views | median of views | tuned percentile | "
            "MAE male | MAE female | epochs (best) | train s | device |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        agg = r["by_aggregate"]
        tuned = next(((k, v) for k, v in agg.items() if k.startswith("percentile_")), None)
        tuned_txt = f"{tuned[1]:.2f} (p{tuned[0].split('_')[1]})" if tuned else "–"
        lines.append(f"| {r['run']} | {r['model']} | {f(r['val_mae'])} | {f(agg.get('mean'))} | "
                     f"{f(agg.get('median'))} | {tuned_txt} | {f(r['mae_male'])} | {f(r['mae_female'])} | "
                     f"{r['epochs']} ({f(r['best_epoch'])}) | {f(r['train_seconds'])} | {f(r['device'])} |")
    return "\n".join(lines)
