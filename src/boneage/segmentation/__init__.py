"""Hand segmentation as a method: training segmenters (``task: segmentation``), active
learning of hand masks, film-background masks, and training the small hand U-Net.

The networks themselves are architectures in :mod:`boneage.models` (:mod:`~boneage.models.unet`,
:mod:`~boneage.models.fcdensenet`, :mod:`~boneage.models.segmenter`); the classical convex-hull
crop is a preprocessing step in :mod:`boneage.transforms.hull`.
"""
