"""Example model for ``tpcflow root-train``: a small fully connected classifier.

root-train calls ``model(idim)``; input rows are (B, idim) float32, min/max-normalised and
padded.  Return 1 output (a logit, BCE loss) for labels 0/1, or K outputs for labels 0..K-1
(cross-entropy).  This example has 5 outputs: it predicts the number of muons (0-4) of the
HZZ tutorial ntuple from the other reconstructed objects (see README.md).
"""

from torch import nn

NUM_CLASSES = 5


def model(idim):
    return nn.Sequential(nn.Linear(idim, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, NUM_CLASSES))
