"""The context-aware segmentation model (ROS-free)."""
from .backbone import SWIN_VARIANTS, BackboneWeightsError, SwinBackbone
from .config import LossConfig, ModelConfig, load_model_config
from .losses import SegmentationLoss, pixel_text_contrastive
from .segmentor import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ContextSegmentor,
    LogitsPipeline,
    SegmentationOutput,
    SegmentationPipeline,
)

__all__ = [
    "SWIN_VARIANTS",
    "BackboneWeightsError",
    "SwinBackbone",
    "LossConfig",
    "ModelConfig",
    "load_model_config",
    "SegmentationLoss",
    "pixel_text_contrastive",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ContextSegmentor",
    "LogitsPipeline",
    "SegmentationOutput",
    "SegmentationPipeline",
]
