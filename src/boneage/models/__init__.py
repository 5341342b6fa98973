"""Architectures: the bone-age models (a registry of backbones sharing one sex-fusion
regression head), and the networks the methods train: the hand U-Net, FC-DenseNet and the
segmenters' registry, the GAN's generator and discriminator."""

from boneage.models import backbones  # noqa: F401  (registers the models)
from boneage.models import compression  # noqa: F401
from boneage.models import enhancer  # noqa: F401  (ENHANCERS)
from boneage.models import inception_v3_scaled  # noqa: F401
from boneage.models import per_sex  # noqa: F401
from boneage.models import segmenter  # noqa: F401  (SEGMENTERS)
from boneage.models.head import BoneAgeModel, SexFusionHead
from boneage.models.registry import InputSpec, create_model, list_models, model_input_spec, register_model

__all__ = ["create_model", "list_models", "register_model", "InputSpec", "model_input_spec", "BoneAgeModel", "SexFusionHead"]
