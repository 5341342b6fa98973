"""The quality gate: is this a hand radiograph the model can read, the right way up?"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class QualityVerdict:
    """What the gate decided about one image before its bone age was given.

    ``accepted`` is False only for images assessed anyway with ``force``; ``corrections``
    says what was changed (``"inverted polarity corrected"``, ``"rotated 90° clockwise"``)
    and ``reason`` why the gate would have refused.
    """

    accepted: bool
    reason: str = ""
    corrections: tuple[str, ...] = ()
    scores: dict = field(default_factory=dict)
    forced: bool = False

    @property
    def label(self) -> str:
        """One word for tables: accepted, corrected or forced."""
        if self.forced:
            return "forced"
        return "corrected" if self.corrections else "accepted"

    def to_dict(self) -> dict:
        return {"verdict": self.label, "reason": self.reason, "corrections": list(self.corrections),
                "scores": {k: round(float(v), 4) for k, v in self.scores.items()}}


#: DICOM modalities that are projection radiographs (or captures of one): CR, DX, RG, and
#: OT (other: secondary captures of films). CT, MR, US, NM, PT, XC (photograph) ... are not.
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "RG", "OT"})
#: A BodyPartExamined containing one of these may show a hand.
HAND_BODY_PARTS = ("HAND", "WRIST", "FINGER", "EXTREMITY", "ARM")
_MODALITY_NAMES = {"CT": "computed tomography", "MR": "magnetic resonance", "US": "ultrasound",
                   "NM": "nuclear medicine", "PT": "PET", "MG": "mammography", "XC": "photograph",
                   "XA": "angiography", "RF": "fluoroscopy", "SR": "structured report"}


def header_refusal(metadata) -> str | None:
    """Why a DICOM header says the image is not a hand radiograph, or None.

    Missing tags pass: many exports drop them, and the pixels are checked anyway.
    """
    if metadata is None:
        return None
    if metadata.n_frames > 1:
        return f"a multi-frame DICOM object ({metadata.n_frames} frames), not one radiograph"
    modality = metadata.modality
    if modality and modality not in RADIOGRAPH_MODALITIES:
        kind = _MODALITY_NAMES.get(modality)
        return (f"DICOM Modality is {modality}" + (f" ({kind})" if kind else "")
                + f", not a radiograph ({', '.join(sorted(RADIOGRAPH_MODALITIES))})")
    part = metadata.body_part
    if part and not any(word in part for word in HAND_BODY_PARTS):
        return f"DICOM BodyPartExamined is {part}, not a hand or wrist"
    if "LOCALIZER" in metadata.image_type:
        return "DICOM ImageType says LOCALIZER (a scout image), not a radiograph"
    return None


def screen(predictor, pixels, metadata=None, *, name: str | None = None, force: bool = False):
    """``(pixels, QualityVerdict)`` for one image; raises QualityRefusal unless ``force``."""
    from boneage.errors import QualityRefusal

    reason = header_refusal(metadata)
    if reason is not None:
        if not force:
            raise QualityRefusal(reason, name)
        return pixels, QualityVerdict(accepted=False, reason=reason, forced=True)
    return pixels, QualityVerdict(accepted=True)
