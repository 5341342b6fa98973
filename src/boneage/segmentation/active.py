"""Query-by-committee active learning for hand segmentation (the paper's section 2.2, Algorithm 1).

A committee of networks that differ only in their random seed is trained on the labelled
images. Each member's bottleneck feature vector of an unlabelled image is compared with every
other member's by the sine dissimilarity ``sqrt(1 - cos^2)`` (eq. 5); an image's disagreement
is the sum over member pairs (eq. 7), and the ``k`` most disagreeing images are sent for
annotation. A round is: train the committee → validation Dice → score the pool → select →
annotate → add, and rounds repeat until the validation Dice stops improving (``patience``
rounds without a gain), the pool is empty or ``max_rounds`` is reached.

Everything lives in one folder, so a round can be resumed days later::

    state.json          pool, validation set, labelled ids, pending selection, curve, options
    masks/<id>.png      the annotated masks (0/255)
    round-<r>/member-<m>/   each member's training run (the one loop's folder; resumable)

The person who annotates works through :mod:`boneage.segmentation.annotate` (``boneage annotate
export|import``); :class:`MaskOracle` answers from known masks instead, so the whole loop runs
on synthetic data in tests and in the evidence. ``strategy="random"`` selects at random: the
baseline curve.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from boneage.config import Recipe
from boneage.data.labels import Sample
from boneage.engine import fit
from boneage.errors import ConfigError, InputError
from boneage.fileutils import atomic_path
from boneage.io.image import read_image
from boneage.transforms.hull import _foreground, largest_component
from boneage.inference.torch_model import load_segmenter
from boneage.models.segmenter import mask_from_probability, probability_maps
from boneage.segmentation.task import read_mask
from boneage.models.unet import dice_score
from boneage.sex import Sex

logger = logging.getLogger(__name__)

__all__ = ["sine_dissimilarity", "committee_disagreement", "select_most_disagreeing", "MaskOracle",
           "ActiveLearning", "STRATEGIES"]

STATE_FILE = "state.json"
STRATEGIES = ("qbc", "random")
_DONE = "done.json"


def sine_dissimilarity(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``sqrt(1 - (u·v / (|u| |v|))^2)`` over the last axis (the paper's eq. 5).

    0 for parallel (or anti-parallel) vectors, 1 for orthogonal ones. A zero vector has no
    direction and counts as orthogonal to everything (1).
    """
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    if u.shape != v.shape:
        raise ValueError(f"feature vectors differ in shape: {u.shape} and {v.shape}")
    norms = np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1)
    cos = np.divide(np.sum(u * v, axis=-1), norms, out=np.zeros_like(norms), where=norms > 0)
    return np.sqrt(np.clip(1.0 - cos ** 2, 0.0, 1.0))


def committee_disagreement(features: np.ndarray) -> np.ndarray:
    """Disagreement per image from features (C members, N images, D): the sum over member
    pairs ``i > j`` of their sine dissimilarity (eq. 7)."""
    f = np.asarray(features)
    if f.ndim != 3:
        raise ValueError(f"features must be (members, images, dims), got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"committee size must be at least 2 to disagree, got {f.shape[0]}")
    total = np.zeros(f.shape[1])
    for i in range(f.shape[0]):
        for j in range(i):
            total += sine_dissimilarity(f[i], f[j])
    return total


def select_most_disagreeing(ids: Sequence[str], scores: Sequence[float], k: int) -> list[str]:
    """The ``k`` ids of highest score, most disagreeing first (ties keep the pool's order)."""
    ids, scores = list(ids), np.asarray(scores, np.float64)
    if len(ids) != len(scores):
        raise ValueError(f"{len(ids)} ids but {len(scores)} scores")
    _check_k(k, len(ids))
    order = np.argsort(-scores, kind="stable")
    return [ids[i] for i in order[:k]]


def _check_k(k: int, pool: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (images selected per round) must be a positive integer, got {k!r}")
    if k > pool:
        raise ValueError(f"k = {k} is larger than the unlabelled pool ({pool} images)")


def _write_mask(path: Path, mask: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", (np.asarray(mask) > 0).astype(np.uint8) * 255)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 array
        raise OSError(f"could not encode {path}")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.tobytes())


class MaskOracle:
    """Answers annotation requests from known masks (``<id>.png`` in ``mask_dir``): the
    stand-in for the person, on data whose masks are known."""

    def __init__(self, mask_dir: str | Path):
        self.mask_dir = Path(mask_dir)
        if not self.mask_dir.is_dir():
            raise InputError("oracle mask folder not found", self.mask_dir)
        self.asked = 0

    def annotate(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The known masks of ``ids`` (0/1), as a person's corrections would arrive."""
        self.asked += len(ids)
        return {i: read_mask(self.mask_dir / f"{i}.png") for i in ids}


def _sample_dict(s: Sample) -> dict:
    return {"id": s.id, "path": str(Path(s.path).resolve()), "boneage": s.boneage, "sex": s.sex.value}


def _sample(d: dict) -> Sample:
    return Sample(Path(d["path"]), d["id"], d["boneage"], Sex(d["sex"]))


@dataclass
class RoundResult:
    """What one training round gave: its labelled count, validation Dice and selection."""

    round: int
    n_labelled: int
    val_dice: float
    selected: list[str]


class ActiveLearning:
    """One active-learning run in a folder (see the module docstring); :meth:`create` starts
    one, :meth:`open` resumes one."""

    def __init__(self, folder: str | Path, state: dict):
        self.folder, self.state = Path(folder), state

    # -- creation and state ----------------------------------------------------------------
    @classmethod
    def create(cls, folder: str | Path, recipe: Recipe, pool: Sequence[Sample], val: Sequence[Sample],
               val_mask_dir: str | Path, *, initial: int = 8, k: int = 8, committee: int = 3,
               strategy: str = "qbc", seed: int = 0, patience: int = 1, min_delta: float = 0.0,
               max_rounds: int | None = None) -> "ActiveLearning":
        """Start a run: ``initial`` pool images drawn at random await annotation first.

        Raises:
            ConfigError: a committee below 2 for QBC (below 1 otherwise), ``k`` or ``initial``
                larger than the pool, an unknown strategy, a recipe that is not a segmentation
                recipe, or a folder that already holds a run.
        """
        folder = Path(folder)
        if (folder / STATE_FILE).exists():
            raise InputError("folder already holds an active-learning run; open it to resume", folder)
        if strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
        low = 2 if strategy == "qbc" else 1
        if isinstance(committee, bool) or not isinstance(committee, int) or committee < low:
            raise ConfigError(f"committee size must be at least {low} for strategy {strategy!r}, got {committee!r}")
        if recipe.task != "segmentation":
            raise ConfigError(f"the recipe must be a segmentation recipe (task: segmentation), got task {recipe.task!r}")
        ids = [s.id for s in pool]
        if len(set(ids)) != len(ids) or set(ids) & {s.id for s in val}:
            raise ConfigError("pool ids must be unique and not in the validation set")
        try:
            _check_k(k, len(pool))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if isinstance(initial, bool) or not isinstance(initial, int) or not 1 <= initial <= len(pool):
            raise ConfigError(f"initial (images annotated before the first round) must be 1 to the pool "
                              f"size {len(pool)}, got {initial!r}")
        for name, value in (("patience", patience), ("max_rounds", max_rounds or 1)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        val_mask_dir = Path(val_mask_dir)
        for s in val:
            if not (val_mask_dir / f"{s.id}.png").is_file():
                raise InputError(f"validation image {s.id} has no mask", val_mask_dir / f"{s.id}.png")
        rng = np.random.default_rng(seed)
        first = [ids[i] for i in sorted(rng.choice(len(ids), size=initial, replace=False))]
        state = {"format": "boneage-active-learning/1", "recipe": recipe.to_dict(),
                 "pool": [_sample_dict(s) for s in pool], "val": [_sample_dict(s) for s in val],
                 "val_mask_dir": str(val_mask_dir.resolve()), "k": int(k), "committee": int(committee),
                 "strategy": strategy, "seed": int(seed), "patience": int(patience),
                 "min_delta": float(min_delta), "max_rounds": max_rounds,
                 "round": 0, "labelled": [], "pending": first, "phase": "annotate", "history": []}
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "masks").mkdir(exist_ok=True)
        out = cls(folder, state)
        out.save()
        return out

    @classmethod
    def open(cls, folder: str | Path) -> "ActiveLearning":
        """The run in ``folder``, where its state says it is."""
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            raise InputError("no active-learning run here (no state.json)", folder)
        try:
            state = json.loads(path.read_text())
        except ValueError as exc:
            raise InputError(f"damaged state file: {exc}", path) from None
        return cls(folder, state)

    def save(self) -> None:
        """Write the state atomically: a run killed while saving keeps its previous state."""
        with atomic_path(self.folder / STATE_FILE) as tmp:
            Path(tmp).write_text(json.dumps(self.state, indent=1))

    @property
    def phase(self) -> str:
        """``annotate`` (waiting for masks of :attr:`pending`), ``train`` or ``done``."""
        return self.state["phase"]

    @property
    def pending(self) -> list[str]:
        """Ids selected for annotation whose masks have not arrived yet."""
        return list(self.state["pending"])

    @property
    def history(self) -> list[dict]:
        """One entry per finished round: labelled count, Dice per member and committee, selection."""
        return list(self.state["history"])

    def samples(self, ids: Sequence[str] | None = None) -> list[Sample]:
        """Pool samples, all or those of ``ids`` (in that order)."""
        by_id = {d["id"]: d for d in self.state["pool"]}
        return [_sample(by_id[i]) for i in (ids if ids is not None else by_id)]

    def unlabelled(self) -> list[str]:
        """Pool ids neither labelled nor awaiting annotation, in pool order."""
        done = set(self.state["labelled"]) | set(self.state["pending"])
        return [d["id"] for d in self.state["pool"] if d["id"] not in done]

    # -- annotation ------------------------------------------------------------------------
    def add_masks(self, masks: Mapping[str, np.ndarray]) -> None:
        """Store the masks of the pending images and add them to the labelled set; the next
        round can train. Every pending id must be answered, and no other.

        Raises:
            InputError: an id that was not asked for, a pending id without a mask, a mask of
                the wrong size, or an empty mask.
        """
        if self.phase != "annotate":
            raise InputError(f"no annotation is pending (the run is in phase {self.phase!r})", self.folder)
        pending = self.pending
        unknown = sorted(set(masks) - set(pending))
        if unknown:
            raise InputError(f"unknown id {unknown[0]!r}: not among the {len(pending)} images awaiting annotation")
        missing = [i for i in pending if i not in masks]
        if missing:
            raise InputError(f"no mask for pending image {missing[0]!r} ({len(missing)} missing)")
        for s in self.samples(pending):
            m = np.asarray(masks[s.id])
            shape = read_image(s.path).pixels.shape
            if m.shape != shape:
                raise InputError(f"mask of {s.id} is {m.shape[0]}x{m.shape[1]} but the image is "
                                 f"{shape[0]}x{shape[1]}")
            if not (m > 0).any():
                raise InputError(f"mask of {s.id} is empty (no hand pixel)")
        for i in pending:
            _write_mask(self.folder / "masks" / f"{i}.png", masks[i])
        self.state["labelled"] += pending
        self.state["pending"] = []
        self.state["phase"] = "train"
        self.save()

    # -- training and selection ------------------------------------------------------------
    def member_recipe(self, member: int) -> Recipe:
        """The recipe member ``member`` trains: its own seed, all labelled images, no split
        (validation is the run's fixed set)."""
        r = Recipe.from_dict(copy.deepcopy(self.state["recipe"]))
        r.train.seed = int(self.state["seed"]) + 1000 * member
        r.data.val_fraction = 0.0
        r.data.mask_dir = str(self.folder / "masks")
        return r

    def _train_member(self, member: int, log, round: int | None = None) -> Path:
        out = self.folder / f"round-{self.state['round'] if round is None else round}" / f"member-{member}"
        model = out / "model.safetensors"
        if (out / _DONE).is_file():
            return model
        if round is not None and round != self.state["round"]:
            raise InputError(f"round {round}'s committee was not trained", out)
        resume = (out / "checkpoint.pt").is_file()
        fit(self.member_recipe(member), out, resume=resume, overwrite=not resume, progress=False,
            samples=self.samples(self.state["labelled"]), log=log)
        (out / _DONE).write_text(json.dumps({"labelled": len(self.state["labelled"])}))
        return model

    def committee(self, log=None, round: int | None = None) -> list:
        """The members of ``round`` (default: the current one, training those not yet trained)."""
        log = log or (lambda *_: None)
        return [load_segmenter(self._train_member(m, log, round))[0] for m in range(self.state["committee"])]

    def _val_arrays(self):
        folder = Path(self.state["val_mask_dir"])
        images, masks = [], []
        for d in self.state["val"]:
            images.append(read_image(d["path"]).pixels)
            masks.append(read_mask(folder / f"{d['id']}.png"))
        return images, masks

    def validation_dice(self, members: list) -> tuple[list[float], float]:
        """Each member's mean Dice on the validation set and the committee's (its mean
        probability map, thresholded by Otsu), at the images' own resolution."""
        images, masks = self._val_arrays()
        probs = [probability_maps(m, images) for m in members]
        per_member = [float(np.mean([dice_score(mask_from_probability(p, t.shape), t)
                                     for p, t in zip(pm, masks)])) for pm in probs]
        mean_prob = np.mean(probs, axis=0)
        joint = float(np.mean([dice_score(mask_from_probability(p, t.shape), t)
                               for p, t in zip(mean_prob, masks)]))
        return per_member, joint

    def proposals(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Masks to show the annotator for ``ids``: the committee's (mean probability, Otsu,
        largest component), or before any training a threshold + largest component of the image."""
        samples = self.samples(ids)
        images = [read_image(s.path).pixels for s in samples]
        if not self.state["history"]:
            return {s.id: largest_component(_foreground(im, None)) for s, im in zip(samples, images)}
        members = self.committee(round=self.state["history"][-1]["round"])  # the one that selected them
        mean_prob = np.mean([probability_maps(m, images) for m in members], axis=0)
        return {s.id: mask_from_probability(p, im.shape) for s, im, p in zip(samples, images, mean_prob)}

    def _stop_reason(self) -> str | None:
        hist, patience = self.state["history"], self.state["patience"]
        # An improvement beats the best so far by more than min_delta.
        best, best_round = -np.inf, 0
        for i, h in enumerate(hist):
            if h["val_dice"] > best + self.state["min_delta"]:
                best, best_round = h["val_dice"], i
        if len(hist) - 1 - best_round >= patience:
            return f"validation Dice has not improved for {patience} round(s)"
        if self.state["max_rounds"] is not None and len(hist) >= self.state["max_rounds"]:
            return f"max_rounds {self.state['max_rounds']} reached"
        if not self.unlabelled():
            return "the pool is fully labelled"
        return None

    def train_round(self, log=None) -> RoundResult:
        """Train the committee on the labelled images, record the validation Dice, and (unless
        the run stops) select the next images to annotate."""
        if self.phase != "train":
            raise InputError(f"the run is in phase {self.phase!r}: "
                             + ("import the pending masks first" if self.phase == "annotate" else "it has finished"),
                             self.folder)
        members = self.committee(log)
        per_member, joint = self.validation_dice(members)
        r = self.state["round"]
        entry = {"round": r, "n_labelled": len(self.state["labelled"]), "val_dice": float(np.mean(per_member)),
                 "val_dice_members": per_member, "val_dice_committee": joint}
        self.state["history"].append(entry)
        reason = self._stop_reason()
        selected: list[str] = []
        if reason is None:
            pool = self.unlabelled()
            k = min(self.state["k"], len(pool))
            if self.state["strategy"] == "qbc":
                images = [read_image(s.path).pixels for s in self.samples(pool)]
                feats = np.stack([probability_maps(m, images, features=True)[1] for m in members])
                scores = committee_disagreement(feats)
                selected = select_most_disagreeing(pool, scores, k)
                entry["selected_disagreement"] = [float(s) for s in np.sort(scores)[::-1][:k]]
                entry["pool_disagreement_mean"] = float(np.mean(scores))
            else:
                rng = np.random.default_rng((self.state["seed"], r))
                selected = [pool[i] for i in sorted(rng.choice(len(pool), size=k, replace=False))]
            self.state["pending"], self.state["phase"] = selected, "annotate"
            self.state["round"] = r + 1
        else:
            entry["stopped"] = reason
            self.state["phase"] = "done"
        entry["selected"] = selected
        self.save()
        return RoundResult(r, entry["n_labelled"], entry["val_dice"], selected)

    def run(self, oracle: MaskOracle, log=None) -> list[dict]:
        """Alternate annotation by ``oracle`` and training rounds until the run stops; returns
        the curve (one entry per round). Resumes wherever the folder's state is."""
        while self.phase != "done":
            if self.phase == "annotate":
                self.add_masks(oracle.annotate(self.pending))
            else:
                res = self.train_round(log)
                logger.info("round %d: %d labelled, validation Dice %.4f", res.round, res.n_labelled, res.val_dice)
        return self.history
