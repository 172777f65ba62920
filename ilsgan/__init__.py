"""ilsgan: ILSGAN (Independent Layer Synthesis GAN) for unsupervised foreground/background
segmentation, with its hot paths as ahead-of-time compiled kernels.

Layout: ``ilsgan.ops`` (kernels behind one function per op) -> networks -> losses -> training
loop (``python -m ilsgan.train``).
"""

__version__ = "0.1.0"
