"""Evaluation metrics: segmentation (IoU/Dice/...), FID/KID, MINE layer independence, real-vs-generated accuracy."""

from .segmentation import SegmentationMeter, confusion_counts, segmentation_metrics
from .fid import (FeatureStats, InceptionError, extract_features, fid_from_features, frechet_distance,
                  kid_from_features, load_inception, resolve_inception_path)
from .mine import MINE_PAIRS, layer_independence, mine_estimate
from .realism import real_vs_generated_accuracy

__all__ = [
    "SegmentationMeter", "confusion_counts", "segmentation_metrics",
    "FeatureStats", "InceptionError", "extract_features", "fid_from_features", "frechet_distance",
    "kid_from_features", "load_inception", "resolve_inception_path",
    "MINE_PAIRS", "layer_independence", "mine_estimate", "real_vs_generated_accuracy",
]
