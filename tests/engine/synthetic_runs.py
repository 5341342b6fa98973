"""A small training recipe on synthetic radiographs, shared by the engine's test modules."""

from boneage.config import Recipe


def synthetic_recipe(root, **train) -> Recipe:
    """A recipe that learns bone age from the 64-px synthetic folder ``root`` in seconds on a
    CPU (48-px images, a small CNN); ``train`` overrides keys of its ``train`` section."""
    return Recipe.from_dict({
        "name": "synthetic-test",
        "data": {"root": str(root), "val_fraction": 0.25, "split_seed": 1},
        "preprocess": [{"name": "resize", "size": 48}],
        "augment": {"steps": [{"name": "rotate", "max_deg": 5}]},
        "model": {"name": "small_cnn", "options": {"width": 8}},
        "loss": {"name": "mae"},
        "optim": {"name": "adam", "lr": 0.003, "grad_clip": 5.0},
        "schedule": {"name": "step", "step_size": 6, "gamma": 0.3},
        "train": {"epochs": 8, "batch_size": 16, "seed": 0, "device": "cpu", **train},
        "inference": {"aggregate": "mean"},
    })
