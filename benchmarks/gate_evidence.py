"""What the quality gate accepts and refuses, set by set: the evidence table of docs/results.md.

    python benchmarks/gate_evidence.py ../shared/data --model NEW.safetensors \
        --before OLD.safetensors --out gate-evidence.md

DATA holds ``rsna-100px`` (or the folder the model was trained on, ``--train-data``),
``rsna-299px``, ``rsna-fullres``, ``rsna-raw13`` and ``xray-other``. Every gate is applied to
the same features (the gates of one set of weights, e.g. before and after a recalibration:
the script checks that the files' weights are equal), so the columns differ only by the gate.

Rows: the held-out part of ``xray-other`` by body part (the ids the new gate's calibration
stored as only measured; the fit part is shown too, marked as fitted on), the held-back RSNA
test half (ids stored in the model file, not used to fit or threshold the gate) as stored, as
their 299-px area-shrunk copies and in a random preparation, each of the 8 orientations of
that test half (orientation right and accepted), rsna-raw13 and rsna-fullres as stored, and
the generated non-radiographs of the 8 variants never fitted on.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from boneage.inference.loader import load_predictor


def _weights_equal(a: Path, b: Path) -> bool:
    from boneage.inference.torch_model import read_weights

    wa, wb = read_weights(a), read_weights(b)
    return wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", required=True, type=Path, help="the gate measured last (and its features)")
    parser.add_argument("--before", type=Path, action="append", default=[],
                        help="model files (same weights) whose gates get a column before --model's")
    parser.add_argument("--train-data", default="rsna-100px", help="folder the model was trained on")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    parser.add_argument("--json", type=Path, help="also write the counts as JSON here")
    args = parser.parse_args(argv)

    from boneage.data.labels import load_samples
    from boneage.data.negatives import TEST_VARIANTS, negative_set, read_body_part_folder, split_body_parts
    from boneage.data.split import holdout_subset
    from boneage.evaluation.robustness import model_grid
    from boneage.evaluation.calibrate import _prepare, candidates_of, orientation_stack
    from boneage.inference.modelfile import load_model_extras
    from boneage.inference.quality import gate_scores, judge
    from boneage.io import read_image

    for other in args.before:
        if not _weights_equal(other, args.model):
            print(f"{other}: its weights differ from {args.model}'s; measure it on its own", file=sys.stderr)
            return 2
    predictor = load_predictor(args.model)
    gates = [(p.name, load_model_extras(p)[0]) for p in args.before + [args.model]]
    facts = predictor.info.get("quality_gate", {})
    d = args.data
    rows = []   # (set, images label, stack, fitted_on)

    def add(name, stack, note=""):
        rows.append((name, stack, note))
        print(f"  {name}: {len(stack)} images", file=sys.stderr, flush=True)

    negatives = read_body_part_folder(d / "xray-other")
    test_ids = facts.get("negatives_test_ids")
    if test_ids is None:  # a gate fitted without them: the split calibrate would draw
        test_ids = [im.id for im in split_body_parts(negatives, 0.5, 0)[1]]
    test_ids = set(test_ids)
    pixels = {im.id: read_image(im.path).pixels for im in negatives}
    for held_out in (True, False):
        for part in sorted({im.body_part for im in negatives}):
            ims = [pixels[im.id] for im in negatives if im.body_part == part and (im.id in test_ids) == held_out]
            add(f"xray-other {'held-out' if held_out else 'fit'} part: {part}", orientation_stack(predictor, ims),
                "" if held_out else "fitted on")

    samples = load_samples(d / args.train_data)
    held = holdout_subset(samples, predictor.recipe.data, predictor.info)
    cal_ids = set(predictor.info.get("calibration_ids", []))
    test = [s for s in held if s.id not in cal_ids]
    test_images = [read_image(s.path).pixels for s in test]
    test_stack = orientation_stack(predictor, test_images)
    add(f"held-back RSNA test half, {args.train_data} as stored", test_stack)
    if (d / "rsna-299px").is_dir():
        big = load_samples(d / "rsna-299px")
        by_id = {s.id: s for s in big}
        add("held-back RSNA test half, rsna-299px copies", orientation_stack(
            predictor, [read_image(by_id[s.id].path).pixels for s in test if s.id in by_id]))
    with tempfile.TemporaryDirectory() as tmp:
        prepared = _prepare(test_images, np.random.default_rng(4), Path(tmp), model_grid(predictor.recipe))
    add("held-back RSNA test half, a random preparation each", orientation_stack(predictor, prepared))
    for name in ("rsna-raw13", "rsna-fullres"):
        if (d / name).is_dir():
            add(f"{name} as stored", orientation_stack(predictor, [read_image(s.path).pixels for s in load_samples(d / name)]))
    generated = {}
    for variant, im in negative_set(TEST_VARIANTS, 30, seed=7):
        generated.setdefault(variant, []).append(im)
    add("generated non-radiographs of 8 unseen variants",
        np.concatenate([orientation_stack(predictor, ims) for ims in generated.values()]))

    def accepted(gate, stack, h=0):
        return np.array([judge(gate, gate_scores(gate, r))[0] is None for r in candidates_of(stack, h)])

    table = {name: {} for name, _, _ in rows}
    for gname, gate in gates:
        for name, stack, _ in rows:
            table[name][gname] = [int(accepted(gate, stack).sum()), len(stack)]
        right = []
        for h in range(8):
            scores = [gate_scores(gate, r) for r in candidates_of(test_stack, h)]
            right.append([s.orientation == h and judge(gate, s)[0] is None for s in scores])
            orient_ok = [s.orientation == h for s in scores]
            table.setdefault(f"test half turned/inverted, orientation {h}: right", {})[gname] = [int(np.sum(orient_ok)), len(scores)]
        table.setdefault("test half in all 8 orientations: right and accepted", {})[gname] = [int(np.sum(right)), int(np.size(right))]

    names = [g for g, _ in gates]
    lines = ["| set | " + " | ".join(f"accepted, {g}" for g in names) + " | note |",
             "|---|" + "---|" * len(names) + "---|"]
    notes = {name: note for name, _, note in rows}
    for name, cells in table.items():
        shown = [f"{a} / {n} ({a / n:.1%})" for a, n in (cells[g] for g in names)]
        lines.append(f"| {name} | " + " | ".join(shown) + f" | {notes.get(name, '')} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
