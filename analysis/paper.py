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

# -- CIFAR-10 (Section V-D, Appendix C) ----------------------------------------------------------

CIFAR_SETTING = (
    "CIFAR-10 (50,000 training / 10,000 test images), batch-normalised VGG-19 split at pool1, pool2 "
    "or pool3; defender weight λ = 0.1 with one deconvolution defender; SGD lr 0.01 (÷10 every 50 "
    "epochs), momentum 0.9, weight decay 5e-4, random crop and flip, 150 epochs; attackers deconv, fc "
    "(1024 → 3072) and sparse fc (with dropout 0.5), outputs clipped to the pixel range"
)
# Section V-D(1): the accuracy the defense costs at each partition, in points ("less than 2 %").
CIFAR_ACC_DROP = {"pool1": 1.6, "pool2": 1.0, "pool3": 0.2}
# Section V-D(1)'s conclusion.
FRONTIER_CIFAR = (
    'for the very deep CNN "we can draw the similar conclusion about the privacy partitioning" as for '
    "LFW: deeper partitions protect more at a smaller accuracy cost"
)
# Figure 5 (f)–(j), as Section V-D(1) describes it (the figure prints no values).
FIGURE5_CIFAR = {
    "test_acc": "with the defense, accuracy drops by less than 2 points at every partition: 1.6, 1.0 and 0.2 "
    "at pool1, pool2 and pool3",
    "reprint_acc": 'as for LFW: "the indistinguishability of the recovered images by the best attacker '
    'decrease[s]" with the defense and at deeper partitions',
    "ssim": "the best attacker's reconstructions are less similar with the defense, and less so the deeper "
    "the partition",
    "mse": "as for SSIM: the defense raises the best attacker's error, more so at deeper partitions",
    "dpd": "as for SSIM: the defense raises the perceptual distance, more so at deeper partitions",
}

# -- MNIST (Section V-B, Appendix A) ------------------------------------------------------------

MNIST_SETTING = (
    "MNIST (60,000 training / 10,000 test images), an MLP split after its second layer; one "
    "two-layer ReLU defender (Table I) or four (Table II, λ = 200); Adam, model lr 1e-4, defender "
    "lr 1e-3, batch 32, 500 epochs, dropout 0.1; distance SSIM; 8 MLP attackers (Appendix A) "
    "trained with an MSE loss, each kept at its lowest MSE; one run per cell (no spread is given)"
)
# Table I: defender weight λ -> model accuracy (%), and per attacker ①–⑧ (our mnist_a1–a8)
# the (MSE, SSIM) at each λ.
TABLE_I_LAMS = (0, 100, 200, 300, 400, 500)
TABLE_I_ACC = (98.4, 98.2, 98.2, 98.1, 98.1, 98.1)
TABLE_I = {
    "mnist_a1": (
        (0.070, 0.546),
        (0.072, 0.534),
        (0.079, 0.500),
        (0.081, 0.495),
        (0.086, 0.466),
        (0.116, 0.347),
    ),
    "mnist_a2": (
        (0.072, 0.524),
        (0.068, 0.553),
        (0.080, 0.500),
        (0.082, 0.491),
        (0.093, 0.449),
        (0.117, 0.361),
    ),
    "mnist_a3": (
        (0.016, 0.834),
        (0.018, 0.823),
        (0.021, 0.807),
        (0.021, 0.797),
        (0.021, 0.818),
        (0.023, 0.792),
    ),
    "mnist_a4": (
        (0.022, 0.783),
        (0.021, 0.794),
        (0.025, 0.755),
        (0.025, 0.765),
        (0.023, 0.787),
        (0.025, 0.760),
    ),
    "mnist_a5": (
        (0.066, 0.552),
        (0.062, 0.587),
        (0.071, 0.533),
        (0.076, 0.517),
        (0.076, 0.517),
        (0.087, 0.457),
    ),
    "mnist_a6": (
        (0.074, 0.514),
        (0.070, 0.543),
        (0.087, 0.457),
        (0.097, 0.420),
        (0.092, 0.448),
        (0.131, 0.298),
    ),
    "mnist_a7": (
        (0.070, 0.527),
        (0.063, 0.575),
        (0.071, 0.531),
        (0.070, 0.532),
        (0.081, 0.470),
        (0.091, 0.443),
    ),
    "mnist_a8": (
        (0.032, 0.734),
        (0.037, 0.713),
        (0.046, 0.659),
        (0.049, 0.637),
        (0.048, 0.640),
        (0.061, 0.558),
    ),
}
# Table II: no defender / single defender / multiple (4) defenders at λ = 200: accuracy (%), and
# per attacker (MSE, SSIM) in each column. (Its "no defender" SSIMs differ from Table I's λ = 0
# column in the paper itself.)
TABLE_II_COLUMNS = ("no defender", "single defender", "multiple defenders")
TABLE_II_ACC = (98.4, 98.2, 98.0)
TABLE_II = {
    "mnist_a1": ((0.070, 0.530), (0.079, 0.500), (0.215, 0.076)),
    "mnist_a2": ((0.072, 0.540), (0.080, 0.500), (0.209, 0.098)),
    "mnist_a3": ((0.016, 0.841), (0.021, 0.807), (0.070, 0.500)),
    "mnist_a4": ((0.022, 0.820), (0.025, 0.755), (0.073, 0.494)),
    "mnist_a5": ((0.066, 0.543), (0.071, 0.533), (0.195, 0.194)),
    "mnist_a6": ((0.074, 0.518), (0.087, 0.457), (0.202, 0.117)),
    "mnist_a7": ((0.070, 0.568), (0.071, 0.531), (0.168, 0.205)),
    "mnist_a8": ((0.032, 0.722), (0.046, 0.659), (0.192, 0.160)),
}
