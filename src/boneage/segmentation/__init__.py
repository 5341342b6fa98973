"""Hand-region cropping: a training-free convex-hull crop and a small U-Net crop.

These are the CH+S+I and U+S+I alternatives to the SE-ResNet paper's compression module. The
U-Net is a stand-in until FC-DenseNet arrives with a later segmentation issue.
"""

from boneage.segmentation.hull import (
    Box, convex_hull_box, convex_hull_crop, crop_to_box, expand_box, largest_component, mask_box,
)
from boneage.segmentation.unet import (
    HandUNet, dice_score, load_hand_unet, predict_hand_mask, save_hand_unet, train_hand_unet,
    unet_crop, unet_crop_box,
)

__all__ = [
    "Box", "convex_hull_box", "convex_hull_crop", "crop_to_box", "expand_box",
    "largest_component", "mask_box", "HandUNet", "dice_score", "load_hand_unet",
    "predict_hand_mask", "save_hand_unet", "train_hand_unet", "unet_crop", "unet_crop_box",
]
