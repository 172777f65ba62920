"""UNet and the "train on generated, test on real" segmentation protocol (ILSGAN.md section 8)."""

from .unet import UNet
from .protocol import (ProtocolConfig, colour_agreement, colour_augment, direct_stats, evaluate_model,
                       generate_pairs, load_unet, open_test_set, predict_logits, predict_masks, run_protocol,
                       save_unet, train_unet)

__all__ = ["UNet", "ProtocolConfig", "colour_agreement", "colour_augment", "direct_stats", "evaluate_model",
           "generate_pairs", "load_unet", "open_test_set", "predict_logits", "predict_masks", "run_protocol",
           "save_unet", "train_unet"]
