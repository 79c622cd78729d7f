"""Attribute inference on reconstructions: the gender estimation of Table III (V-C(2)).

The paper runs the standard two-step pipeline on the attacker's reconstructions: detect
a face, then classify the gender of each detected face, and counts #TI (images), #DF
(images with a detected face) and #CG (detected faces whose gender is right). Its tools
(dlib's HOG+SVM detector, a pretrained Wide ResNet) need downloads, so offline we use
real, trained stand-ins that ship with our dependencies or train in seconds:

- detection: scikit-image's LBP frontal-face cascade, its few knobs calibrated on a
  sample of the *original* test images stratified by person and gender
  (:func:`calibration_sample`) against real non-face crops (:meth:`FaceDetector.calibrate`);
- gender: HOG features + a class-balanced linear SVM trained on original LFW images of
  people who are not among the model's identities (``Dataset.disjoint``), so the
  classifier never saw the faces it is scored on.

Images arrive in the data set's ``value_range`` and are turned into grey [0, 1] for skimage.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from skimage import color, data, feature, transform
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from torch import Tensor

from pp_cluster.data.base import Split
from pp_cluster.privacy.metrics import to_unit

# The cascade scans a 24×24 window, and an LFW crop's face fills about half the image,
# so images are scaled up to at least this side before detection (lfw-subset is 25 px).
MIN_DETECT_SIDE = 64
_WINDOW = 24


def to_grey(images: Tensor, value_range: tuple[float, float]) -> np.ndarray:
    """N×C×H×W images in ``value_range`` -> N×H×W float64 grey in [0, 1] (clipped)."""
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a N×C×H×W tensor with C = 1 or 3, got {shape}")
    unit = to_unit(images.detach().float().cpu(), value_range).clamp(0, 1).numpy().astype(np.float64)
    return unit[:, 0] if unit.shape[1] == 1 else color.rgb2gray(unit, channel_axis=1)


@dataclass(frozen=True)
class DetectorParams:
    """``detect_multi_scale`` settings; sizes are fractions of the (upscaled) image side."""

    scale_factor: float = 1.2
    step_ratio: float = 1.0
    min_size: float = 0.375
    max_size: float = 1.0
    min_neighbors: int = 2


# Searched by calibrate(): the settings that move detection rate vs. false positives most
# on 64×64 LFW (max_size and a larger min_size changed nothing or only lost faces there).
DEFAULT_GRID: dict[str, tuple[Any, ...]] = {
    "scale_factor": (1.1, 1.2),
    "step_ratio": (1.0, 1.5),
    "min_neighbors": (1, 2, 3),
}


def non_face_crops(side: int) -> np.ndarray:
    """scikit-image's 100 real non-face crops from LFW photos (``lfw_subset``), grey [0, 1]
    at ``side``×``side``: the clutter a face detector must reject, available offline."""
    crops = data.lfw_subset()[100:]
    return np.stack([transform.resize(c, (side, side), order=1, anti_aliasing=True) for c in crops])


def calibration_sample(split: Split, n: int, seed: int = 0) -> Tensor:
    """Sorted indices of ``min(n, len(split))`` images of ``split``: a seeded sample stratified
    by person (``split.y``) and, where ``attrs["gender"]`` is known, by gender.

    Every person gives one image before anyone gives two (each person's images in a seeded
    order), so the sample covers ``min(n, people)`` people. Within a round the people are in a
    seeded order in which each gender (a person's majority known label; unknown is a group of
    its own) is spread evenly, so a round cut short keeps the genders in their proportion among
    the people. The detector is calibrated on it because the test split comes sorted by person:
    its first images are the few people whose names sort first.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the calibration sample size must be an integer >= 1, got {n!r}")
    if len(split) == 0:
        raise ValueError("the calibration sample needs a split with at least one image")
    rng = np.random.default_rng(seed)
    y = split.y.cpu().numpy()
    gender = split.attrs["gender"].cpu().numpy() if "gender" in split.attrs else np.full(len(y), -1)
    people = rng.permutation(np.unique(y))
    pools = [rng.permutation(np.flatnonzero(y == p)) for p in people]

    def majority(pool: np.ndarray) -> int:
        known = gender[pool][gender[pool] >= 0]
        return int(np.bincount(known).argmax()) if len(known) else -1

    genders = np.array([majority(pool) for pool in pools])
    spread = np.empty(len(people))  # a person's place in the round: evenly through its gender group
    for g in np.unique(genders):
        members = np.flatnonzero(genders == g)
        spread[members] = (np.arange(len(members)) + 0.5) / len(members)
    pools = [pools[i] for i in np.argsort(spread, kind="stable")]
    rounds = max(len(pool) for pool in pools)
    picked = [pool[r] for r in range(rounds) for pool in pools if r < len(pool)][:n]
    return torch.from_numpy(np.sort(np.array(picked, dtype=np.int64)))


class FaceDetector:
    """Does an image contain a frontal face? (#DF of Table III)."""

    def __init__(self, value_range: tuple[float, float], params: DetectorParams = DetectorParams()) -> None:
        self.value_range = value_range
        self.params = params
        self.calibration: dict[str, Any] | None = None
        self._cascade = feature.Cascade(data.lbp_frontal_face_cascade_filename())

    # The cascade is a compiled object that cannot be pickled; it is rebuilt from the file
    # that ships with scikit-image, so a calibrated detector can travel to other processes.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_cascade"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cascade = feature.Cascade(data.lbp_frontal_face_cascade_filename())

    def _found(self, grey: np.ndarray, params: DetectorParams) -> np.ndarray:
        out = np.zeros(len(grey), dtype=bool)
        for i, im in enumerate(grey):
            if min(im.shape) < MIN_DETECT_SIDE:
                s = MIN_DETECT_SIDE / min(im.shape)
                im = transform.resize(im, (round(im.shape[0] * s), round(im.shape[1] * s)), order=1)
            side = min(im.shape)
            lo = max(_WINDOW, round(params.min_size * side))
            hi = max(lo, round(params.max_size * side))
            boxes = self._cascade.detect_multi_scale(
                im,
                scale_factor=params.scale_factor,
                step_ratio=params.step_ratio,
                min_size=(lo, lo),
                max_size=(hi, hi),
                min_neighbor_number=params.min_neighbors,
            )
            out[i] = len(boxes) > 0
        return out

    def detect(self, images: Tensor) -> np.ndarray:
        """One bool per image: at least one face found."""
        return self._found(to_grey(images, self.value_range), self.params)

    def calibrate(
        self,
        originals: Tensor,
        negatives: Tensor | None = None,
        max_false_rate: float = 0.05,
        grid: Mapping[str, Sequence[Any]] | None = None,
    ) -> FaceDetector:
        """Pick the ``grid`` point (over :class:`DetectorParams` fields, default
        :data:`DEFAULT_GRID`) that maximises detection rate minus false-positive rate on
        ``originals`` (real faces) and ``negatives`` (default :func:`non_face_crops`),
        among points whose false-positive rate is at most ``max_false_rate``.

        Calibrate on the original test images, never on reconstructions: the detector
        must be fixed before it judges an attack. Returns ``self``; the chosen rates are
        in ``self.calibration``.
        """
        if not 0 <= max_false_rate < 1:
            raise ValueError(f"max_false_rate must be in [0, 1), got {max_false_rate!r}")
        grid = dict(DEFAULT_GRID if grid is None else grid)
        names = {f.name for f in fields(DetectorParams)}
        if not grid or set(grid) - names or not all(len(v) for v in grid.values()):
            raise ValueError(f"grid must map some of {sorted(names)} to non-empty value lists, got {grid!r}")
        faces = to_grey(originals, self.value_range)
        if len(faces) == 0:
            raise ValueError("calibrate needs at least one original image")
        clutter = (
            non_face_crops(max(faces.shape[1:]))
            if negatives is None
            else to_grey(negatives, self.value_range)
        )
        if len(clutter) == 0:
            raise ValueError("calibrate needs at least one negative image")
        candidates = []
        for values in itertools.product(*grid.values()):
            params = replace(self.params, **dict(zip(grid, values)))
            hit, false = float(self._found(faces, params).mean()), float(self._found(clutter, params).mean())
            candidates.append({"params": params, "detection_rate": hit, "false_rate": false})
        ok = [c for c in candidates if c["false_rate"] <= max_false_rate]
        if not ok:
            best = min(c["false_rate"] for c in candidates)
            raise ValueError(
                f"no grid point keeps the false-positive rate <= {max_false_rate} "
                f"(lowest {best:.3f}); widen the grid (e.g. more min_neighbors)"
            )
        best = max(ok, key=lambda c: (c["detection_rate"] - c["false_rate"], -c["false_rate"]))
        self.params = best["params"]
        self.calibration = {
            **best,
            "n_originals": len(faces),
            "n_negatives": len(clutter),
            "candidates": candidates,
        }
        return self


class GenderClassifier:
    """Gender of a face image (#CG of Table III): HOG + class-balanced linear SVM.

    Features come from the central 3/4 of the image (deep-funneled LFW is aligned, so
    that is the face and hair, not background) resized to 48×48, HOG with 6-px cells.
    ``C`` is small because there are about as many features (1764) as training faces.
    """

    FEATURE_SIDE = 48
    CROP = 0.75

    def __init__(self, value_range: tuple[float, float], C: float = 1e-3, seed: int = 0) -> None:
        self.value_range = value_range
        self.C = C
        self.seed = seed
        self.model: Pipeline | None = None

    def features(self, images: Tensor) -> np.ndarray:
        """N×1764 float32 HOG vectors (any image size: the crop is resized)."""
        grey = to_grey(images, self.value_range)
        h, w = grey.shape[1:]
        dh, dw = round(h * (1 - self.CROP) / 2), round(w * (1 - self.CROP) / 2)
        side = self.FEATURE_SIDE
        return np.stack(
            [
                feature.hog(
                    transform.resize(g[dh : h - dh, dw : w - dw], (side, side), order=1, anti_aliasing=True),
                    orientations=9,
                    pixels_per_cell=(side // 8, side // 8),
                    cells_per_block=(2, 2),
                )
                for g in grey
            ]
        ).astype(np.float32)

    @staticmethod
    def _labels(split: Split) -> np.ndarray:
        if "gender" not in split.attrs:
            raise ValueError("split has no attrs['gender'] (lfw: load with the gender lists present)")
        return split.attrs["gender"].cpu().numpy()

    def fit(self, split: Split) -> GenderClassifier:
        """Train on the images of ``split`` with a known gender (label -1 is skipped)."""
        y = self._labels(split)
        known = y >= 0
        if len(np.unique(y[known])) < 2:
            raise ValueError(
                f"fit needs both genders among the labelled images, got counts "
                f"{dict(zip(*np.unique(y[known], return_counts=True)))}"
            )
        x = self.features(split.x[torch.from_numpy(known)])
        self.model = make_pipeline(
            StandardScaler(), LinearSVC(C=self.C, class_weight="balanced", random_state=self.seed)
        ).fit(x, y[known])
        return self

    def predict(self, images: Tensor) -> np.ndarray:
        """int64 per image: 1 male, 0 female."""
        if self.model is None:
            raise ValueError("GenderClassifier.predict before fit")
        if len(images) == 0:
            return np.zeros(0, np.int64)
        return self.model.predict(self.features(images)).astype(np.int64)

    def accuracy(self, split: Split) -> float:
        """Accuracy over the images of ``split`` with a known gender."""
        return _scores(self._labels(split), self.predict(split.x))[0]

    def balanced_accuracy(self, split: Split) -> float:
        """Mean per-gender recall: LFW is ~80 % male, so plain accuracy flatters a
        classifier that always says "male"; this one gives it 0.5."""
        return _scores(self._labels(split), self.predict(split.x))[1]


def _scores(labels: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(accuracy, balanced accuracy) over the images with a known gender."""
    known = labels >= 0
    if not known.any():
        raise ValueError("no image with a known gender to score")
    return float((pred[known] == labels[known]).mean()), float(
        balanced_accuracy_score(labels[known], pred[known])
    )


def attribute_metrics(
    reconstructions: Tensor, originals_split: Split, detector: FaceDetector, classifier: GenderClassifier
) -> dict[str, float | int]:
    """Table III's #CG / #DF / #TI for ``reconstructions`` of ``originals_split.x``, and
    the same pipeline on the originals as the ceiling.

    The paper's pipeline: detect, then classify each detected face. Reconstructions are in
    the originals' value range, one per original. An image whose true gender is unknown
    (label -1) can be detected but never counts as correctly classified. Keys: n_ti, n_df,
    n_cg, n_df_original, n_cg_original, detector_rate_original, gender_acc and
    gender_balanced_acc (classifier on all original images with a known gender),
    n_gender_unknown.
    """
    if reconstructions.shape != originals_split.x.shape:
        raise ValueError(
            f"reconstructions {tuple(reconstructions.shape)} and originals "
            f"{tuple(originals_split.x.shape)} differ in shape"
        )
    labels = GenderClassifier._labels(originals_split)
    found = detector.detect(reconstructions)
    pred = np.full(len(labels), -2, dtype=np.int64)  # -2: not classified (no face found)
    pred[found] = classifier.predict(reconstructions[torch.from_numpy(found)])
    found_orig = detector.detect(originals_split.x)
    pred_orig = classifier.predict(originals_split.x)
    acc, balanced = _scores(labels, pred_orig)
    n = len(originals_split)
    return {
        "n_ti": n,
        "n_df": int(found.sum()),
        "n_cg": int((pred == labels).sum()),  # -1 labels never equal a prediction
        "n_df_original": int(found_orig.sum()),
        "n_cg_original": int((found_orig & (pred_orig == labels)).sum()),
        "detector_rate_original": float(found_orig.mean()),
        "gender_acc": acc,
        "gender_balanced_acc": balanced,
        "n_gender_unknown": int((labels < 0).sum()),
    }


@dataclass
class AttributeJudge:
    """The fixed pipeline that scores every reconstruction of a sweep (Table III): one
    detector calibrated on ``n_calibrate`` original test images (:func:`calibration_sample`,
    seeded with ``seed``) and one gender classifier trained on people outside the model's
    identities, built once per sweep and shipped to the attackers."""

    detector: FaceDetector
    classifier: GenderClassifier

    @classmethod
    def for_dataset(
        cls,
        test: Split,
        disjoint: Split | None,
        value_range: tuple[float, float],
        n_calibrate: int = 200,
        seed: int = 0,
    ) -> AttributeJudge:
        if disjoint is None or "gender" not in disjoint.attrs or "gender" not in test.attrs:
            raise ValueError(
                "attribute inference needs gender labels and a disjoint split of other people "
                "(lfw: dataset options disjoint=True and the gender lists beside the images)"
            )
        detector = FaceDetector(value_range).calibrate(test.x[calibration_sample(test, n_calibrate, seed)])
        return cls(detector, GenderClassifier(value_range, seed=seed).fit(disjoint))

    def score(self, reconstructions: Tensor, originals: Split) -> dict[str, float | int]:
        return attribute_metrics(reconstructions, originals, self.detector, self.classifier)
