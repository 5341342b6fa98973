"""Seeded synthetic hand radiographs whose anatomy changes with bone age and sex.

No real radiograph may ship with the package, yet tests need data a small model
can learn from and the README needs an example input. This module draws a
stylised left hand (PA view, thumb on the right of the image) with OpenCV
primitives: soft tissue, radius/ulna, carpals, metacarpals and phalanges, with
bone bright on a dark background like a displayed X-ray.

Age is encoded the way a radiologist reads it, so that a model has to look at
the same kind of structure it would on a real film:

* carpal ossification centres appear one after another (capitate first,
  pisiform last) and grow;
* epiphyses appear, grow to cap their shaft, and the dark growth-plate gap
  between epiphysis and shaft narrows and closes at ~16 y (boys) / ~14 y (girls);
* the whole hand grows, bones thicken and become denser (brighter).

Girls mature earlier, modelled by reading every maturity curve at an effective
age ``age * 1.12``. Hand size also follows the effective age (girls' hands look
more mature, which is what bone-age labels mean).

The ``seed`` drives small individual anatomical variation (hand size, finger
proportions, density) and, with ``nuisance=True``, acquisition nuisance:
rotation, shift, zoom, contrast/gamma/brightness, an exposure gradient, noise,
collimation edges and a burned-in "L"/"R" marker.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "AGE_RANGE_MONTHS",
    "SyntheticRadiograph",
    "make_radiograph",
    "sample_radiographs",
    "write_synthetic_dataset",
    "write_example_radiograph",
]

AGE_RANGE_MONTHS = (1.0, 228.0)

# Girls reach each maturity stage ~1.5-2 years earlier; a multiplicative
# effective age keeps every age curve shared between the sexes.
_FEMALE_MATURITY_FACTOR = 1.12

# Fixed-point precision for cv2.fillPoly: 4 fractional bits lets shapes move by
# 1/16 px, so age changes stay smooth even at 64 px.
_SHIFT = 4
_SHIFT_MUL = float(1 << _SHIFT)

_BACKGROUND = 0.06
_TISSUE = 0.30

# Effective ages (months) at which carpal ossification centres appear, in the
# usual order; 8 are visible by ~12 y. Centre (x, y) in canonical units, semi
# axes (a, b) at full size, and tilt in degrees.
_CARPALS = (
    # name,        appear, x,     y,     a,     b,     angle
    ("capitate", 2.0, 0.515, 0.686, 0.021, 0.032, 4.0),
    ("hamate", 3.0, 0.470, 0.684, 0.021, 0.028, -12.0),
    ("triquetrum", 30.0, 0.462, 0.727, 0.019, 0.016, 20.0),
    ("lunate", 48.0, 0.515, 0.733, 0.022, 0.018, 0.0),
    ("trapezium", 60.0, 0.602, 0.682, 0.020, 0.019, 30.0),
    ("trapezoid", 66.0, 0.561, 0.679, 0.016, 0.018, 10.0),
    ("scaphoid", 72.0, 0.572, 0.727, 0.029, 0.017, -30.0),
    ("pisiform", 132.0, 0.447, 0.738, 0.012, 0.012, 0.0),
)
# Months from appearance until a carpal reaches full size.
_CARPAL_GROWTH_MONTHS = 84.0

# Rays: thumb, index, middle, ring, little. Metacarpal base (x, y), direction
# in degrees from "up" (positive toward the thumb), and per-segment lengths
# (metacarpal, proximal, [middle], distal) and shaft half-widths.
_RAYS = (
    # base_x, base_y, angle, lengths,                       half-widths
    (0.612, 0.668, 40.0, (0.120, 0.085, 0.062), (0.019, 0.016, 0.012)),
    (0.558, 0.647, 8.0, (0.200, 0.106, 0.064, 0.046), (0.017, 0.015, 0.012, 0.010)),
    (0.515, 0.645, 0.0, (0.190, 0.115, 0.074, 0.050), (0.018, 0.016, 0.013, 0.010)),
    (0.475, 0.648, -7.0, (0.172, 0.106, 0.069, 0.048), (0.016, 0.014, 0.012, 0.009)),
    (0.440, 0.655, -14.0, (0.155, 0.088, 0.052, 0.042), (0.015, 0.013, 0.011, 0.009)),
)
_JOINT_GAP = 0.012
# Fingers fan out slightly more toward the tips.
_PHALANX_EXTRA_FAN = (-6.0, 2.0, 0.0, -2.0, -4.0)

# Epiphysis appearance and fusion, effective months. Fusion at 192 months
# for boys puts girls at 192 / 1.12 ~ 171 months ~ 14.3 y.
_EPI_METACARPAL = (18.0, 192.0)
_EPI_THUMB_METACARPAL = (24.0, 188.0)
_EPI_PROXIMAL_PHALANX = (15.0, 186.0)
_EPI_MIDDLE_PHALANX = (24.0, 184.0)
_EPI_DISTAL_PHALANX = (20.0, 180.0)
_EPI_RADIUS = (12.0, 204.0)
_EPI_ULNA = (84.0, 204.0)

# Canonical point that lands at the image centre, roughly the middle of the
# hand between fingertips and wrist.
_PIVOT = np.array([0.5, 0.46])

_UNIT_CIRCLE_N = 20
_THETA = np.linspace(0.0, 2.0 * np.pi, _UNIT_CIRCLE_N, endpoint=False)
_COS, _SIN = np.cos(_THETA), np.sin(_THETA)
_HALF_THETA = np.linspace(0.0, np.pi, 9)


@dataclass
class SyntheticRadiograph:
    """One synthetic radiograph with its ground truth.

    Attributes:
        image: float32 (H, W) in [0, 1]; bone bright, background dark.
        mask: uint8 (H, W); 1 on the hand (palm, fingers, wrist/forearm), 0
            elsewhere. Drawn with the same geometry as the hand but before
            nuisance markers and collimation borders.
        age_months: bone age in months.
        sex: "M" or "F".
    """

    image: np.ndarray
    mask: np.ndarray
    age_months: float
    sex: str


# ---------------------------------------------------------------- validation


def _check_sex(sex: object) -> str:
    if not isinstance(sex, str) or sex not in {"M", "F"}:
        raise ValueError(f"sex must be 'M' or 'F', got {sex!r}")
    return sex


def _check_age(age_months: object) -> float:
    try:
        age = float(age_months)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"age_months must be a number, got {age_months!r}") from None
    lo, hi = AGE_RANGE_MONTHS
    if not (lo <= age <= hi):  # also rejects NaN
        raise ValueError(f"age_months must be within [{lo}, {hi}] months, got {age_months!r}")
    return age


def _check_size(size: object) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)
    ):
        h, w = int(size[0]), int(size[1])
    else:
        raise ValueError(f"size must be an int or an (H, W) pair of ints, got {size!r}")
    if min(h, w) < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size!r}")
    return h, w


# ------------------------------------------------------------- age curves


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def _growth(age_eff: float) -> float:
    """Fraction of adult hand size reached, 0 at birth to ~1 at 19 y.

    Mixes a log curve (fast infant growth) with a linear term so that size
    still separates older children, who make up most of a uniform age range.
    """
    a = min(age_eff, 240.0)
    log_part = math.log1p(a / 30.0) / math.log1p(240.0 / 30.0)
    return 0.55 * log_part + 0.45 * (a / 240.0)


def _epiphysis_state(age_eff: float, appear: float, fuse: float) -> tuple[float, float]:
    """Return (size fraction in [0, 1], growth-plate gap fraction in [0, 1]).

    The ossification centre grows from nothing at ``appear`` to full width at
    60 % of the way to fusion; the gap then keeps narrowing until ``fuse``.
    """
    if age_eff <= appear:
        return 0.0, 1.0
    u = (age_eff - appear) / (fuse - appear)
    size = min(1.0, u / 0.6) ** 0.6
    gap = 1.0 - _smoothstep(u)
    return size, gap


# ---------------------------------------------------------- drawing helpers


class _Painter:
    """Maps canonical hand coordinates to pixels and fills polygons.

    The mapping is a similarity (uniform scale, rotation, shift), so ellipses
    stay ellipses and the mask gets exactly the same geometry as the image.
    """

    def __init__(self, scale_px: float, angle_deg: float, centre_px: tuple[float, float]):
        t = math.radians(angle_deg)
        c, s = math.cos(t), math.sin(t)
        self.lin = scale_px * np.array([[c, -s], [s, c]])
        self.centre = np.asarray(centre_px, dtype=np.float64)

    def to_px(self, pts: np.ndarray) -> np.ndarray:
        return (pts - _PIVOT) @ self.lin.T + self.centre

    def fill(self, img: np.ndarray, pts: np.ndarray, value: float) -> None:
        px = np.round(self.to_px(pts) * _SHIFT_MUL).astype(np.int32)
        cv2.fillPoly(img, [px], value, cv2.LINE_8, _SHIFT)


def _ellipse(cx: float, cy: float, a: float, b: float, angle_deg: float) -> np.ndarray:
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    x = a * _COS
    y = b * _SIN
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _bone(p0: np.ndarray, p1: np.ndarray, r0: float, rm: float, r1: float,
          round0: bool = True, round1: bool = True, flare: float | None = None) -> np.ndarray:
    """Polygon of a long bone from ``p0`` to ``p1``: flared ends (r0, r1), waist rm.

    An end is rounded (a flattened dome, as an articular head) or flat (a
    metaphysis facing a growth plate, so a fused epiphysis joins its shaft
    without a notch). The shape never extends past ``p0``/``p1``, which keeps
    the joint spaces between neighbouring bones open. ``flare`` is the
    absolute length of each flared end (default 20 % of the bone).
    """
    d = p1 - p0
    length = float(np.hypot(*d))
    d = d / max(length, 1e-9)
    n = np.array([-d[1], d[0]])
    h0 = 0.6 * r0 if round0 else 0.0
    h1 = 0.6 * r1 if round1 else 0.0
    q0 = p0 + h0 * d
    body = max(length - h0 - h1, 1e-9)
    f = 0.2 if flare is None else min(0.45, flare / body)
    ts = np.array([0.0, f, 0.5, 1.0 - f, 1.0])
    rs = np.array([r0, 0.5 * (r0 + rm), rm, 0.5 * (rm + r1), r1])
    centres = q0[None, :] + ts[:, None] * body * d[None, :]
    left = centres + rs[:, None] * n[None, :]
    right = centres - rs[:, None] * n[None, :]
    ang = _HALF_THETA[1:-1]
    cos_n = np.cos(ang)[:, None] * n[None, :]
    sin_d = np.sin(ang)[:, None] * d[None, :]
    parts = [left]
    if round1:
        parts.append(centres[-1][None, :] + r1 * cos_n + h1 * sin_d)
    parts.append(right[::-1])
    if round0:
        parts.append(centres[0][None, :] - r0 * cos_n - h0 * sin_d)
    return np.concatenate(parts, axis=0)


def _cap(base: np.ndarray, d: np.ndarray, w: float, h: float) -> np.ndarray:
    """Epiphysis: flat physeal side at ``base``, dome of height ``h`` along ``d``."""
    n = np.array([-d[1], d[0]])
    ang = _HALF_THETA
    v = 0.5 * w * np.cos(ang)
    u = h * np.sin(ang) ** 0.7  # fuller than an ellipse, like a real epiphysis
    return base[None, :] + v[:, None] * n[None, :] + u[:, None] * d[None, :]


def _unit(angle_deg: float) -> np.ndarray:
    t = math.radians(angle_deg)
    return np.array([math.sin(t), -math.cos(t)])


# -------------------------------------------------------------- renderer


@dataclass
class _Individual:
    size: float
    density: float
    finger_len: np.ndarray  # per-ray length multipliers
    spread: float


def _draw_long_bone(
    painter: _Painter, img: np.ndarray, p0: np.ndarray, p1: np.ndarray,
    r: float, age_eff: float, epi: tuple[float, float], epi_at_start: bool,
    bone: float, tissue: float, rounded_far_end: bool = True,
    r_end: float | None = None, r_far: float | None = None, flare: float | None = None,
) -> None:
    """Shaft plus an epiphysis at one end behind an age-dependent growth plate."""
    d = p1 - p0
    d = d / max(float(np.hypot(*d)), 1e-9)
    if r_end is None:
        r_end = 1.15 * r
    if r_far is None:
        r_far = 1.1 * r if rounded_far_end else 0.75 * r
    medulla = bone - 0.07 * (bone - tissue)
    size, gap = _epiphysis_state(age_eff, *epi)
    epi_h_full = 0.8 * r_end
    gap_len = 0.55 * r_end * gap
    if epi_at_start:
        end, other, outward = p0, p1, -d
    else:
        end, other, outward = p1, p0, d
    # The shaft stops short of the cartilage slot reserved for the epiphysis;
    # what is left of the slot reads as the dark growth plate.
    shaft_end = end - outward * (epi_h_full + gap_len)
    if epi_at_start:
        poly = _bone(shaft_end, other, r_end, 0.8 * r, r_far, round0=False, round1=True, flare=flare)
    else:
        poly = _bone(other, shaft_end, r_far, 0.8 * r, r_end, round0=True, round1=False, flare=flare)
    painter.fill(img, poly, bone)
    a, b = (shaft_end, other) if epi_at_start else (other, shaft_end)
    painter.fill(img, _bone(a + 0.25 * (b - a), b - 0.25 * (b - a), 0.45 * r, 0.35 * r, 0.45 * r), medulla)
    if size > 0.0:
        w = 2.0 * r_end * (0.3 + 0.7 * size) * (1.0 + 0.08 * (1.0 - gap))
        h = epi_h_full * (0.35 + 0.65 * size)
        base = end - outward * epi_h_full * (0.5 + 0.5 * size)
        painter.fill(img, _cap(base, outward, w, h), bone)


def _render(
    h: int, w: int, age: float, sex: str, rng: np.random.Generator, nuisance: bool
) -> tuple[np.ndarray, np.ndarray]:
    age_eff = age * (_FEMALE_MATURITY_FACTOR if sex == "F" else 1.0)
    g = _growth(age_eff)
    maturity = min(age_eff / 228.0, 1.0)

    # Individual variation is always drawn (people differ at the same bone
    # age) and before nuisance, so nuisance=False shares the anatomy of the
    # same seed with nuisance=True.
    ind = _Individual(
        size=float(np.clip(rng.normal(1.0, 0.035), 0.92, 1.08)),
        density=float(rng.normal(0.0, 0.015)),
        finger_len=np.clip(rng.normal(1.0, 0.025, size=5), 0.94, 1.06),
        spread=float(np.clip(rng.normal(1.0, 0.15), 0.7, 1.3)),
    )

    angle = 0.0
    zoom = 1.0
    shift = np.zeros(2)
    if nuisance:
        angle = float(rng.uniform(-15.0, 15.0))
        zoom = float(rng.uniform(0.9, 1.1))
        shift = rng.uniform(-0.06, 0.06, size=2)

    side = float(min(h, w))
    hand_scale = (0.74 + 0.52 * g) * ind.size * zoom
    centre = (w / 2.0 + shift[0] * side, h / 2.0 + (0.02 + shift[1]) * side)
    painter = _Painter(side * hand_scale, angle, centre)

    bone = 0.56 + 0.22 * _smoothstep(maturity) + ind.density
    tissue = _TISSUE
    thick = 0.78 + 0.22 * maturity  # bones thicken relative to hand size

    # Soft tissue goes on a separate canvas: it is blurred more than bone,
    # and its coverage is the mask.
    mask = np.zeros((h, w), np.uint8)
    palm = np.array([
        [0.385, 2.2], [0.386, 0.80], [0.378, 0.74], [0.362, 0.64], [0.352, 0.56],
        [0.358, 0.50], [0.385, 0.468], [0.45, 0.44], [0.52, 0.43], [0.59, 0.43],
        [0.625, 0.45], [0.638, 0.52], [0.66, 0.58], [0.68, 0.64], [0.668, 0.71],
        [0.638, 0.77], [0.625, 0.80], [0.622, 2.2],
    ])
    painter.fill(mask, palm, 1)

    ray_bones: list[list[tuple[np.ndarray, np.ndarray, float]]] = []
    for i, (bx, by, ang, lengths, widths) in enumerate(_RAYS):
        base = np.array([bx, by])
        ang_mc = ang * (1.0 if i == 0 else ind.spread)
        dir_mc = _unit(ang_mc)
        dir_ph = _unit(ang_mc + _PHALANX_EXTRA_FAN[i] * ind.spread)
        p = base.copy()
        segs = []
        for k, (length, r) in enumerate(zip(lengths, widths)):
            d = dir_mc if k == 0 else dir_ph
            length = length * ind.finger_len[i]
            q = p + d * length
            segs.append((p, q, r * thick))
            p = q + d * _JOINT_GAP
        ray_bones.append(segs)
        # Finger soft tissue: from the metacarpal head to just past the tip.
        head = segs[0][1]
        tip = segs[-1][1] + dir_ph * 0.03
        # Real fingers are about twice as wide as their phalanges.
        rt = 1.05 * max(widths[1:]) + 0.018
        start = segs[0][0] * 0.5 + head * 0.5 if i == 0 else head - 0.02 * dir_ph
        finger = _bone(start, tip, rt * (1.2 if i == 0 else 1.05), rt, rt * 0.85)
        painter.fill(mask, finger, 1)
    # Thenar eminence bulges around the thumb metacarpal.
    painter.fill(mask, _ellipse(0.64, 0.615, 0.045, 0.07, -40.0), 1)

    sigma_t = max(0.6, 0.006 * side * hand_scale)
    tissue_map = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma_t)
    # Thicker soft tissue (palm centre, forearm) attenuates more than the edges.
    thickness = cv2.GaussianBlur(tissue_map, (0, 0), 3.0 * sigma_t)
    img = _BACKGROUND + (tissue - _BACKGROUND) * tissue_map * (0.75 + 0.25 * thickness)
    img = img.astype(np.float32)

    # Forearm bones. The radius sits on the thumb side.
    _draw_long_bone(painter, img, np.array([0.548, 2.2]), np.array([0.553, 0.760]), 0.026 * thick,
                    age_eff, _EPI_RADIUS, False, bone, tissue,
                    r_end=0.043 * thick, r_far=0.021 * thick, flare=0.12)
    _draw_long_bone(painter, img, np.array([0.447, 2.2]), np.array([0.451, 0.772]), 0.018 * thick,
                    age_eff, _EPI_ULNA, False, bone, tissue,
                    r_end=0.024 * thick, r_far=0.015 * thick, flare=0.08)

    # Carpals appear in order and grow; before they appear the wrist is only
    # cartilage, which looks like soft tissue.
    for _name, appear, cx, cy, a, b, ang in _CARPALS:
        if age_eff <= appear:
            continue
        frac = min(1.0, (age_eff - appear) / _CARPAL_GROWTH_MONTHS) ** 0.6
        painter.fill(img, _ellipse(cx, cy, a * frac, b * frac, ang), bone)

    epi_plan = (
        (_EPI_THUMB_METACARPAL, _EPI_PROXIMAL_PHALANX, _EPI_DISTAL_PHALANX),
        (_EPI_METACARPAL, _EPI_PROXIMAL_PHALANX, _EPI_MIDDLE_PHALANX, _EPI_DISTAL_PHALANX),
    )
    for i, segs in enumerate(ray_bones):
        plan = epi_plan[0] if i == 0 else epi_plan[1]
        for k, (p0, p1, r) in enumerate(segs):
            # Metacarpals 2-5 have their epiphysis distally; the thumb
            # metacarpal and all phalanges proximally.
            at_start = not (k == 0 and i != 0)
            is_distal_phalanx = k == len(segs) - 1
            _draw_long_bone(painter, img, p0, p1, r, age_eff, plan[k], at_start, bone, tissue,
                            rounded_far_end=not is_distal_phalanx)

    sigma_b = max(0.5, 0.0035 * side)
    img = cv2.GaussianBlur(img, (0, 0), sigma_b)

    if nuisance:
        img = _apply_nuisance(img, rng)
    return np.clip(img, 0.0, 1.0).astype(np.float32), mask


def _apply_nuisance(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape
    side = float(min(h, w))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    # Exposure gradient (heel effect / uneven detector response).
    t = rng.uniform(0.0, 2.0 * np.pi)
    ramp = (np.cos(t) * (xx / w - 0.5) + np.sin(t) * (yy / h - 0.5)).astype(np.float32)
    img = img + float(rng.uniform(0.0, 0.08)) * ramp

    # Display windowing differs between scanners and sites.
    gamma = float(np.exp(rng.uniform(-0.2, 0.2)))
    img = np.clip(img, 0.0, 1.0) ** gamma
    contrast = float(rng.uniform(0.85, 1.15))
    brightness = float(rng.uniform(-0.05, 0.05))
    img = (img - 0.3) * contrast + 0.3 + brightness

    # Collimation: a straight edge beyond which the film is blank, either
    # unexposed-white or shuttered-black in software.
    if rng.random() < 0.35:
        edge = int(rng.integers(4))
        depth = float(rng.uniform(0.03, 0.1))
        tilt = float(rng.uniform(-0.05, 0.05))
        value = float(rng.uniform(0.8, 0.95)) if rng.random() < 0.5 else float(rng.uniform(0.0, 0.03))
        if edge == 0:
            region = yy < (depth * h + tilt * (xx - w / 2))
        elif edge == 1:
            region = yy > ((1 - depth) * h + tilt * (xx - w / 2))
        elif edge == 2:
            region = xx < (depth * w + tilt * (yy - h / 2))
        else:
            region = xx > ((1 - depth) * w + tilt * (yy - h / 2))
        img = np.where(region, np.float32(value), img)

    # Burned-in laterality marker in a corner. putText only draws on 8-bit
    # images, so render to an alpha matte and blend.
    if rng.random() < 0.7:
        text = str(rng.choice(["L", "L", "L PA", "R"]))  # mostly left hands, as in RSNA
        scale = side / 260.0 * float(rng.uniform(0.8, 1.3))
        thickness = max(1, int(round(side / 180.0)))
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        margin = int(0.04 * side) + 1
        corner = int(rng.integers(4))
        x = margin if corner in (0, 2) else max(0, w - margin - tw)
        y = margin + th if corner in (0, 1) else max(th, h - margin - base)
        alpha = np.zeros((h, w), np.uint8)
        cv2.putText(alpha, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
        a = alpha.astype(np.float32) / 255.0
        value = float(rng.uniform(0.85, 1.0))
        img = img * (1.0 - a) + value * a

    sigma = float(rng.uniform(0.005, 0.03))
    img = img + rng.normal(0.0, sigma, size=(h, w)).astype(np.float32)
    return img.astype(np.float32)


# ------------------------------------------------------------------ public


def make_radiograph(
    age_months: float,
    sex: str,
    *,
    size: int | tuple[int, int] = 256,
    seed: int = 0,
    nuisance: bool = True,
) -> SyntheticRadiograph:
    """Draw one synthetic left-hand radiograph.

    Args:
        age_months: bone age in months, within ``AGE_RANGE_MONTHS``.
        sex: "M" or "F"; girls are drawn ~12 % more mature at the same age.
        size: output side in pixels, or an ``(H, W)`` pair; at least 32.
        seed: seeds individual anatomy and, if ``nuisance``, acquisition
            nuisance. Same arguments always give identical arrays.
        nuisance: add rotation (±15°), shift, zoom, windowing changes, an
            exposure gradient, noise, collimation edges and text markers.

    Returns:
        A :class:`SyntheticRadiograph` with a float32 image in [0, 1] and a
        uint8 hand mask of the same shape.

    Raises:
        ValueError: bad sex, age outside ``AGE_RANGE_MONTHS`` or size < 32.
    """
    sex = _check_sex(sex)
    age = _check_age(age_months)
    h, w = _check_size(size)
    rng = np.random.default_rng(seed)
    image, mask = _render(h, w, age, sex, rng, bool(nuisance))
    return SyntheticRadiograph(image=image, mask=mask, age_months=age, sex=sex)


def sample_radiographs(
    n: int,
    *,
    size: int | tuple[int, int] = 128,
    seed: int = 0,
    nuisance: bool = True,
    age_range: tuple[float, float] = AGE_RANGE_MONTHS,
) -> list[SyntheticRadiograph]:
    """Draw ``n`` radiographs with uniform ages and balanced sexes.

    Ages are uniform in ``age_range`` (which must lie inside
    ``AGE_RANGE_MONTHS``); sexes are half "M", half "F" in random order (the
    odd one out, if any, is a coin flip). Everything, including each image's
    own seed, comes from one ``np.random.Generator(seed)``.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n!r}")
    try:
        lo, hi = (float(a) for a in age_range)
    except (TypeError, ValueError):
        raise ValueError(f"age_range must be a (low, high) pair of months, got {age_range!r}") from None
    if not (AGE_RANGE_MONTHS[0] <= lo <= hi <= AGE_RANGE_MONTHS[1]):
        raise ValueError(
            f"age_range must satisfy {AGE_RANGE_MONTHS[0]} <= low <= high <= {AGE_RANGE_MONTHS[1]}, "
            f"got {age_range!r}"
        )
    h, w = _check_size(size)
    rng = np.random.default_rng(seed)
    ages = rng.uniform(lo, hi, size=n)
    sexes = ["M", "F"] * (n // 2)
    if n % 2:
        sexes.append("M" if rng.random() < 0.5 else "F")
    sexes = [sexes[i] for i in rng.permutation(n)]
    seeds = rng.integers(0, 2**31 - 1, size=n)
    return [
        make_radiograph(float(a), s, size=(h, w), seed=int(sd), nuisance=nuisance)
        for a, s, sd in zip(ages, sexes, seeds)
    ]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _write_png(path: Path, image: np.ndarray) -> None:
    # imencode + write_bytes instead of imwrite: works with any path
    # encoding and fails loudly instead of returning False.
    ok, buf = cv2.imencode(".png", _to_uint8(image))
    if not ok:
        raise OSError(f"could not encode PNG for {path}")
    path.write_bytes(buf.tobytes())


def write_synthetic_dataset(
    out_dir: str | Path,
    n: int,
    *,
    size: int | tuple[int, int] = 128,
    seed: int = 0,
    nuisance: bool = True,
) -> Path:
    """Write an RSNA-style dataset of ``n`` synthetic radiographs.

    Layout: ``out_dir/labels.csv`` with header ``id,boneage,male`` (bone age
    in months rounded to 0.1; ``male`` is ``True``/``False``) and
    ``out_dir/images/<id>.png`` as 8-bit grayscale, ids ``1..n``.

    Raises:
        ValueError: ``n < 1``, or ``out_dir`` already holds a ``labels.csv``
            (refusing protects an existing dataset from being mixed with a
            new one).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    out = Path(out_dir)
    labels_path = out / "labels.csv"
    if labels_path.exists():
        raise ValueError(f"refusing to overwrite existing dataset: {str(labels_path)!r} already exists")
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    samples = sample_radiographs(int(n), size=size, seed=seed, nuisance=nuisance)
    rows = []
    for i, s in enumerate(samples, start=1):
        _write_png(images_dir / f"{i}.png", s.image)
        rows.append((i, f"{round(s.age_months, 1):.1f}", "True" if s.sex == "M" else "False"))
    # labels.csv last: its presence marks a complete dataset.
    with labels_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "boneage", "male"])
        writer.writerows(rows)
    return out


def write_example_radiograph(
    path: str | Path,
    *,
    age_months: float = 120.0,
    sex: str = "M",
    size: int | tuple[int, int] = 512,
    seed: int = 0,
) -> Path:
    """Write one synthetic radiograph (with nuisance) as an 8-bit PNG.

    Used to give the README demo an input without shipping a real radiograph.
    Parent directories are created. Returns ``path``.
    """
    sample = make_radiograph(age_months, sex, size=size, seed=seed, nuisance=True)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    _write_png(p, sample.image)
    return p
