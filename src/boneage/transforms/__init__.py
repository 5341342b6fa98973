"""Image transforms: pure functions (``functional``) and parameter-holding classes."""

from boneage.transforms import functional
from boneage.transforms.classes import (
    CLAHE, TRANSFORMS, Compose, CropFractions, HFlip, Identity, NormalizeMinMax, OneOf,
    RandGaussianBlur, RandHFlip, RandRotate, RandVFlip, RandZoom, Resize, Standardize, Transform,
    build_pipeline, build_transform, canonical_pipeline, network_input, preprocessed_copies,
)
from boneage.transforms.functional import extract_patches, make_views, patch_grid, view_layout

__all__ = [
    "functional", "Transform", "Compose", "OneOf", "Identity", "CropFractions", "Resize", "CLAHE",
    "NormalizeMinMax", "Standardize", "HFlip", "RandHFlip", "RandVFlip", "RandRotate",
    "RandGaussianBlur", "RandZoom", "TRANSFORMS", "build_transform", "build_pipeline",
    "canonical_pipeline", "network_input", "preprocessed_copies",
    "patch_grid", "extract_patches", "make_views", "view_layout",
]
