"""The paper's own LFW results (Section V-C of "Privacy Partitioning: Protecting User Data During
the Deep Learning Inference Phase"), to print beside ours. Only what the paper states is here:
Table III prints its counts; Figure 5 (a)–(e) is a bar chart without printed values, so for it
we keep what the text says about it, in words, and no numbers read off the bars.
"""

from __future__ import annotations

# The paper's setting, for the reader comparing: Section V-C and Appendix B.
SETTING = (
    "LFW, people with ≥ 30 images (2,370 images, 34 identities) at 64×64, 80/20 stratified split "
    "(474 test images); photo-to-id CNN; defender weight λ = 0.1 with one deconvolution defender; "
    'SGD 250 epochs; attackers deconv, fc and sparse fc; "we run all of the experiments five times and '
    'compute the average" (no spread is given)'
)

# Table III "Gender Estimation Results" (Section V-C(2)): #CG / #DF / #TI on the reconstructions
# of the test images, "No Defense" and "Has Defense" (λ = 0.1) at each partition.
TABLE_III = {
    ("none", "pool1"): (414, 459, 474),
    ("none", "pool2"): (408, 448, 474),
    ("none", "pool3"): (283, 309, 474),
    ("partition", "pool1"): (359, 390, 474),
    ("partition", "pool2"): (247, 276, 474),
    ("partition", "pool3"): (66, 76, 474),
}

# Figure 5 (a)–(e), as Section V-C(1) describes it (the figure prints no values).
FIGURE5 = {
    "test_acc": 'with the defense, accuracy "is greater than 88%" at every partition (pool1–pool3), and it '
    "degrades less at the deeper partitions than at pool1",
    "reprint_acc": "the defense makes the reconstructions hard to classify at every partition, and reprint "
    "accuracy falls as the partition moves deeper",
    "ssim": 'the defender "deteriorates the quality of recovered input images for all perceptual metrics", '
    "and deeper partitions make the reconstructions less recognisable",
    "mse": "as for SSIM: the defense raises the reconstruction error, more so at deeper partitions",
    "dpd": "as for SSIM: the defense raises the perceptual distance, more so at deeper partitions",
}
# Section V-C(1)'s conclusion about where to partition.
FRONTIER = (
    'combining the five criteria, "deeper layers such as pool3 are the best positions for the privacy '
    'partitioning", at the cost of keeping more of the model on the device'
)
