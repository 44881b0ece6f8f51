"""mmarnn_min: a small, readable reference implementation of MMA-MRNNet.

Kollias et al., "Harnessing Multiple Models of Affect and Dynamic Masked RNN for Precise
Facial Expression Intensity Estimation", arXiv 2303.00180.

    MMA  (section 3.1): a residual multi-task CNN -> per-frame [VA | 7 expressions | 17 AUs]
    MRNN (section 3.2): GRU -> masked routing -> FC(32) -> FC(7) reaction intensities
"""

__version__ = "0.1.0"
