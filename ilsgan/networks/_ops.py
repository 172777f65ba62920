"""The ops the networks call, taken from their modules.

(``ilsgan.ops.<name>`` is avoided here: once a submodule such as ``ilsgan.ops.conv2d_resample`` has
been imported, Python binds the package attribute of that name to the *module*, shadowing the
lazily exported function of the same name.)
"""

import importlib

from ..ops.bias_act import bias_act
from ..ops.conv2d_resample import conv2d_resample
from ..ops.modulated_conv2d import modulated_conv2d
from ..ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = ["bias_act", "conv2d_resample", "modulated_conv2d", "upfirdn2d", "setup_filter", "filter2d", "upsample2d",
           "downsample2d", "get_op"]


def get_op(name: str, module: str):
    """``ilsgan.ops.<module>.<name>`` (imported on first use); ModuleNotFoundError if the module is missing."""
    return getattr(importlib.import_module(f"ilsgan.ops.{module}"), name)
