"""Paced transfer learning: the plateau rule, what each phase freezes, the rebuilt optimiser,
phases in metrics.csv and on resume, and the one-line errors of a bad phase section."""

import csv

import numpy as np
import pytest
import torch

from boneage.config import PhasesConfig, Recipe
from boneage.engine.check import check_recipe
from boneage.engine.phases import PhaseSchedule, plateaued
from boneage.errors import ConfigError
from boneage.models.stages import HEAD, stage_of, stage_parameters

SILENT = dict(progress=False, log=lambda *_: None)


@pytest.mark.parametrize("losses, patience, threshold, expected", [
    ([1.0, 0.9, 0.89, 0.895], 2, 0.05, True),    # the last two gain 1.1 % < 5 % over 0.9
    ([1.0, 0.9, 0.89, 0.80], 2, 0.05, False),    # 0.80 is 11 % below 0.9
    ([1.0, 0.9, 0.8], 2, 0.05, False),           # 0.8 is 20 % below 1.0
    ([1.0, 1.0], 2, 0.0, False),                 # too short: needs patience + 1 values
    ([1.0, 1.0, 1.0], 2, 0.0, True),             # no gain at all
    ([1.0, 1.0, 0.999], 2, 0.0, False),          # any gain counts with threshold 0
    ([2.0, 1.0, 1.2, 1.1], 1, 0.0, True),        # worse than the best before: a plateau
])
def test_plateau_rule_on_hand_made_loss_sequences(losses, patience, threshold, expected):
    assert plateaued(losses, patience, threshold) is expected


def test_plateau_rule_refuses_zero_patience():
    with pytest.raises(ValueError, match="patience must be >= 1"):
        plateaued([1.0, 1.0], 0, 0.0)


def _recipe(**phases) -> Recipe:
    return Recipe.from_dict({
        "name": "paced-test",
        "data": {"val_fraction": 0.25, "split_seed": 1},
        "preprocess": [{"name": "resize", "size": 32}],
        "model": {"name": "efficientnet_lite0", "options": {"pretrained": None, "sex_units": 4}},
        "loss": {"name": "mae"},
        "optim": {"name": "rmsprop", "lr": 0.001},
        "schedule": {"name": "inverse_time", "decay": 0.05},
        "train": {"epochs": 5, "batch_size": 8, "seed": 0, "device": "cpu"},
        "phases": {"order": ["exit", "middle", "entry"], **phases},
    })


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_a_phase_change_unfreezes_exactly_the_named_stage_and_rebuilds_the_optimiser():
    from boneage.engine.tasks import create_task
    from boneage.engine.trainer import Optimisation

    recipe = _recipe(patience=1, threshold=0.1)
    task = create_task(recipe, torch.device("cpu"))
    networks = task.build_networks()
    model = networks["model"]
    stages = model.stage_prefixes
    names = [n for n, _ in model.named_parameters()]
    head = {n for n in names if stage_of(n, stages) == HEAD}
    exit_ = {n for n in names if stage_of(n, stages) == "exit"}
    assert head == {n for n in names if n.startswith("head.")}  # the new layers, nothing else
    optimisation = Optimisation(recipe, task, networks, torch.device("cpu"))

    assert _trainable(model) == head
    opt = optimisation.optimizers["model"]
    assert [g["name"] for g in opt.param_groups] == ["head"]
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for n, p in model.named_parameters() if n in head}
    assert isinstance(opt, torch.optim.RMSprop)
    for _ in range(2):  # two epochs of the inverse-time decay
        opt.step()
        optimisation.schedule(None)
    assert optimisation.lr() == pytest.approx(1e-3 / (1 + 0.05 * 2))

    history = [{"epoch": 1, "train_loss": 1.0}]
    assert task.on_epoch_end(0, history, networks) is False
    history.append({"epoch": 2, "train_loss": 0.95})  # 5 % < 10 %: a plateau
    assert task.on_epoch_end(1, history, networks) is True
    assert [r["phase"] for r in history] == ["head", "head"]
    optimisation.rebuild()

    assert _trainable(model) == head | exit_
    opt2 = optimisation.optimizers["model"]
    assert opt2 is not opt and [g["name"] for g in opt2.param_groups] == ["head", "exit"]
    assert optimisation.lr() == pytest.approx(1e-3)  # the new phase starts at the base rate
    # A step moves the head and the exit flow and nothing else.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    loss = model(torch.rand(4, 3, 32, 32), torch.tensor([1.0, 0.0, 1.0, 0.0])).pow(2).mean()
    optimisation.step("model", loss)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= head | exit_ and moved & exit_
    assert task.state_dict() == {"phases": {"unfrozen": 1, "phase_starts": [1, 3]}}


def test_a_paced_run_writes_its_phases_and_resumes_in_the_same_phase(synthetic_folder, tmp_path):
    from boneage.engine import fit
    from boneage.engine.curves import phase_starts

    # threshold 1: every phase plateaus after patience + 1 = 2 epochs.
    recipe = _recipe(patience=1, threshold=1.0)
    recipe.data.root, recipe.data.limit = str(synthetic_folder), 24
    full = fit(recipe, tmp_path / "full", **SILENT)
    phases = [r["phase"] for r in full.history]
    assert phases == ["head", "head", "head+exit", "head+exit", "head+exit+middle"]
    with open(tmp_path / "full" / "metrics.csv") as fh:
        assert [r["phase"] for r in csv.DictReader(fh)] == phases
    assert phase_starts(full.history) == [(3, "head+exit"), (5, "head+exit+middle")]

    # Interrupted after epoch 3 (in the second phase), then resumed.
    part = recipe.model_copy(deep=True)
    part.train.epochs = 3
    fit(part, tmp_path / "part", **SILENT)
    ck = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)
    assert ck["task"] == {"phases": {"unfrozen": 1, "phase_starts": [1, 3]}}
    ck["recipe"]["train"]["epochs"] = 5
    torch.save(ck, tmp_path / "part" / "checkpoint.pt")
    resumed = fit(recipe, tmp_path / "part", resume=True, **SILENT)
    assert [r["phase"] for r in resumed.history] == phases
    assert resumed.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"], rel=1e-4)


def test_fixed_settings_train_only_what_they_name():
    """The paper's figure-12 rows: a frozen backbone, and fine-tuning from one flow up."""
    from boneage.models import create_model

    model = create_model("efficientnet_lite0", in_chans=3)
    groups = stage_parameters(model)
    frozen = PhaseSchedule(PhasesConfig(unfrozen=0, paced=False), list(model.stage_prefixes))
    assert [g["name"] for g in frozen.parameter_groups(model)] == ["head"]
    assert sum(p.requires_grad for p in model.parameters()) == len(groups["head"])
    from_middle = PhaseSchedule(PhasesConfig(unfrozen=2, paced=False), list(model.stage_prefixes))
    assert [g["name"] for g in from_middle.parameter_groups(model)] == ["head", "exit", "middle"]
    assert not any(p.requires_grad for p in groups["entry"])
    history = [{"epoch": e, "train_loss": 1.0} for e in range(1, 6)]
    assert not any(from_middle.step(e, history[:e + 1]) for e in range(5))  # paced: false


@pytest.mark.parametrize("phases, message", [
    ({"order": ["exit", "middle", "wrist"]}, r"phases.order: the model has no stage 'wrist'; its stages: \['entry', 'middle', 'exit'\]"),
    ({"order": ["exit", "exit", "entry"]}, r"is not a permutation of the model's stages \['entry', 'middle', 'exit'\] \(it lacks \['middle'\]\)"),
    ({"order": ["exit", "middle"]}, r"not a permutation .* \(it lacks \['entry'\]\)"),
    ({"unfrozen": 4}, r"phases.unfrozen must be in \[0, 3\]"),
    ({"patience": 0}, "phases.patience must be >= 1"),
])
def test_a_bad_phase_section_is_one_line_before_any_data(phases, message):
    recipe = _recipe(**phases)
    with pytest.raises(ConfigError, match=message) as err:
        check_recipe(recipe)
    assert "\n" not in str(err.value)


def test_a_model_without_stages_cannot_be_paced():
    recipe = _recipe()
    recipe.model.name, recipe.model.options = "small_cnn", {"width": 4}
    with pytest.raises(ConfigError, match="phases: the model .* names no stages to unfreeze; models that do: "
                                          ".*efficientnet_lite0.*xception"):
        check_recipe(recipe)


def test_xception_has_three_flows_and_loads_a_local_weights_file(tmp_path):
    import timm

    from boneage.models import create_model

    # A timm-format file with its ImageNet classifier, as a converted Keras file would be.
    source = timm.create_model("legacy_xception", pretrained=False, num_classes=1000).state_dict()
    torch.save(source, tmp_path / "xception.pth")
    model = create_model("xception", in_chans=3, pretrained=str(tmp_path / "xception.pth"))
    assert list(model.stage_prefixes) == ["entry", "middle", "exit"]
    assert torch.equal(model.backbone.state_dict()["block7.rep.1.conv1.weight"], source["block7.rep.1.conv1.weight"])
    counts = {k: sum(p.numel() for p in v) for k, v in stage_parameters(model).items()}
    assert counts["middle"] == 8 * 3 * (728 * 9 + 728 * 728 + 2 * 728)  # 8 blocks of 3 separable convs + BN

    bad = dict(source)
    bad["block5.rep.1.conv1.weight"] = torch.zeros(728, 1, 5, 5)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match=r"bad.pth: does not match xception: first mismatched tensor "
                                          r"block5.rep.1.conv1.weight \(file \(728, 1, 5, 5\), model \(728, 1, 3, 3\)\)"):
        create_model("xception", in_chans=3, pretrained=str(tmp_path / "bad.pth"))
    del bad["block5.rep.1.conv1.weight"]
    torch.save(bad, tmp_path / "short.pth")
    with pytest.raises(ConfigError, match="first mismatched tensor block5.rep.1.conv1.weight .missing from the file"):
        create_model("xception", in_chans=3, pretrained=str(tmp_path / "short.pth"))
