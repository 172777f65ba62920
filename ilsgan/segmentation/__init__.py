"""UNet and the "train on generated, test on real" segmentation protocol, with self-training on
unlabeled real images, and the comparison with classical baselines."""

from .unet import UNet
from .protocol import (ProtocolConfig, colour_agreement, departs_from_paper, colour_augment, direct_stats, evaluate_model,
                       generate_pairs, load_unet, open_test_set, predict_logits, predict_masks, pseudo_labels,
                       run_protocol, sample_images, save_unet, self_train, strong_augment, train_unet)
from .compare import BASELINES, baseline_metrics, best_baseline, comparison_table

__all__ = ["UNet", "ProtocolConfig", "colour_agreement", "departs_from_paper", "colour_augment", "direct_stats", "evaluate_model",
           "generate_pairs", "load_unet", "open_test_set", "predict_logits", "predict_masks", "pseudo_labels",
           "run_protocol", "sample_images", "save_unet", "self_train", "strong_augment", "train_unet",
           "BASELINES", "baseline_metrics", "best_baseline", "comparison_table"]
