"""Triton kernels of ilsgan, installed as ``ilsgan.kernels``.

Triton compiles these at run time for the GPU (no host toolchain needed); under
``TRITON_INTERPRET=1`` they run on CPU tensors, which is how the test suite checks them.
Importing this package does not import triton: each kernel module does, when first used.
"""
