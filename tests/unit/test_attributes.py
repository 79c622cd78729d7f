"""Gender estimation on reconstructions (Table III): face detector, gender classifier,
#CG/#DF/#TI. Embedded/synthetic data always; real LFW when ../shared/data is present."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import color, data

from pp_cluster.data.base import Split
from pp_cluster.privacy.attributes import (
    DetectorParams,
    FaceDetector,
    GenderClassifier,
    attribute_metrics,
    to_grey,
)

UNIT = (0.0, 1.0)
SYM = (-1.0, 1.0)
# One detector setting for the real-data tests, so calibration is a 3-point search.
SMALL_GRID = {"min_neighbors": (1, 2, 3)}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def lfw_subset() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-image's embedded real LFW crops (25×25 grey): 100 faces, 100 non-faces."""
    x = torch.from_numpy(data.lfw_subset()).float()[:, None]
    return x[:100], x[100:]


def stripes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 'gender': horizontal (1) vs vertical (0) stripes, random phase and period, noisy."""
    g = gen(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    ii, jj = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    period = 4 + 4 * torch.rand(n, 1, 1, generator=g)
    phase = 6.3 * torch.rand(n, 1, 1, generator=g)
    coord = torch.where(y[:, None, None] == 1, ii, jj)
    x = torch.sin(coord * 6.283 / period + phase) * 0.6 + 0.3 * torch.randn(n, 32, 32, generator=g)
    return x.clamp(-1, 1)[:, None].expand(-1, 3, -1, -1).contiguous(), y


# -- synthetic / embedded -----------------------------------------------------------------
def test_to_grey_maps_the_value_range_to_unit_grey():
    x = torch.rand(2, 3, 8, 9, generator=gen(0)) * 2 - 1
    grey = to_grey(x, SYM)
    assert grey.shape == (2, 8, 9) and grey.dtype == np.float64
    assert np.allclose(grey, color.rgb2gray(((x.numpy() + 1) / 2).transpose(0, 2, 3, 1)))
    assert np.array_equal(to_grey(torch.full((1, 1, 4, 4), 3.0), SYM), np.ones((1, 4, 4)))  # clipped
    with pytest.raises(ValueError, match="N×C×H×W"):
        to_grey(torch.zeros(2, 2, 8, 8), SYM)


def test_detector_calibrated_on_faces_finds_faces_not_clutter(lfw_subset):
    faces, non_faces = lfw_subset
    noise = torch.rand(60, 1, 25, 25, generator=gen(1))
    det = FaceDetector(UNIT).calibrate(faces[:50], noise, max_false_rate=0.05, grid=SMALL_GRID)
    cal = det.calibration
    assert cal["false_rate"] <= 0.05 and cal["n_originals"] == 50 and cal["n_negatives"] == 60
    assert len(cal["candidates"]) == 3 and det.params == cal["params"]
    # the chosen point is the best allowed one by detection minus false rate
    allowed = [c for c in cal["candidates"] if c["false_rate"] <= 0.05]
    assert cal["detection_rate"] - cal["false_rate"] == max(
        c["detection_rate"] - c["false_rate"] for c in allowed
    )
    # held-out real faces vs. real non-face crops the calibration never saw
    assert det.detect(faces[50:]).mean() > 0.7
    assert det.detect(non_faces).mean() < 0.1


def test_calibration_errors_are_named(lfw_subset):
    faces, _ = lfw_subset
    det = FaceDetector(UNIT)
    with pytest.raises(ValueError, match="max_false_rate"):
        det.calibrate(faces[:5], max_false_rate=1.5)
    with pytest.raises(ValueError, match="grid"):
        det.calibrate(faces[:5], grid={"window": (3,)})
    with pytest.raises(ValueError, match="false-positive rate"):  # faces as negatives: nothing qualifies
        det.calibrate(faces[:20], faces[:20], max_false_rate=0.0, grid={"min_neighbors": (1, 2)})
    assert det.params == DetectorParams() and det.calibration is None


def test_gender_classifier_learns_a_synthetic_attribute():
    x, y = stripes(200, 2)
    y_train = y.clone()
    y_train[:30] = -1  # unknown labels are not trained on
    clf = GenderClassifier(SYM).fit(Split(x, torch.zeros_like(y), {"gender": y_train}))
    xt, yt = stripes(120, 3)
    test = Split(xt, torch.zeros_like(yt), {"gender": yt})
    assert clf.accuracy(test) > 0.95 and clf.balanced_accuracy(test) > 0.95
    assert clf.features(xt[:2]).shape == (2, 1764)
    pred = clf.predict(xt)
    assert pred.dtype == np.int64 and set(np.unique(pred)) <= {0, 1}


def test_gender_classifier_errors_are_named():
    x, y = stripes(20, 4)
    with pytest.raises(ValueError, match="before fit"):
        GenderClassifier(SYM).predict(x)
    with pytest.raises(ValueError, match="gender"):
        GenderClassifier(SYM).fit(Split(x, y))
    with pytest.raises(ValueError, match="both genders"):
        GenderClassifier(SYM).fit(Split(x, y, {"gender": torch.ones_like(y)}))


def test_attribute_metrics_counts_detected_and_correct(lfw_subset):
    faces, non_faces = lfw_subset
    x_s, y_s = stripes(100, 5)
    clf = GenderClassifier(UNIT).fit(Split((x_s[:, :1] + 1) / 2, y_s, {"gender": y_s}))
    det = FaceDetector(UNIT, DetectorParams(min_neighbors=2))
    labels = torch.arange(40) % 3 - 1  # -1, 0, 1, ...
    originals = Split(faces[:40], torch.zeros(40, dtype=torch.long), {"gender": labels})
    recs = torch.cat([faces[40:60], non_faces[:20]])  # half faces, half clutter
    m = attribute_metrics(recs, originals, det, clf)

    found, lab = det.detect(recs), labels.numpy()
    pred = clf.predict(recs)
    assert m["n_ti"] == 40 and m["n_df"] == found.sum() and 10 < m["n_df"] < 30
    assert m["n_cg"] == (found & (pred == lab) & (lab >= 0)).sum() <= m["n_df"]
    found_o, pred_o = det.detect(faces[:40]), clf.predict(faces[:40])
    assert m["n_df_original"] == found_o.sum() and m["detector_rate_original"] == found_o.mean()
    assert m["n_cg_original"] == (found_o & (pred_o == lab)).sum()
    known = lab >= 0
    assert m["gender_acc"] == pytest.approx((pred_o[known] == lab[known]).mean())
    assert m["n_gender_unknown"] == (lab < 0).sum() == 14

    unknown = Split(originals.x, originals.y, {"gender": torch.full((40,), -1)})
    with pytest.raises(ValueError, match="known gender"):
        attribute_metrics(recs, unknown, det, clf)
    with pytest.raises(ValueError, match="differ in shape"):
        attribute_metrics(recs[:10], originals, det, clf)


# -- real LFW -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lfw(shared_data):
    from pp_cluster.data import load_dataset

    root = shared_data / "lfw"
    if not (root / "gender").is_dir():
        pytest.skip(f"LFW with gender lists not at {root}")
    return load_dataset("lfw", root, min_faces=30, size=64, disjoint=True, disjoint_max=1000)


@pytest.fixture(scope="module")
def lfw_detector(lfw):
    return FaceDetector(lfw.value_range).calibrate(lfw.test.x[:60], grid=SMALL_GRID)


@pytest.fixture(scope="module")
def lfw_gender(lfw):
    return GenderClassifier(lfw.value_range).fit(lfw.disjoint)


def test_detector_finds_most_lfw_faces_and_little_in_noise(lfw, lfw_detector):
    assert lfw_detector.calibration["detection_rate"] > 0.9
    assert lfw_detector.detect(lfw.test.x[60:160]).mean() > 0.9  # held-out originals
    noise = torch.rand(100, 3, 64, 64, generator=gen(6)) * 2 - 1
    assert lfw_detector.detect(noise).mean() < 0.05


def test_gender_classifier_generalises_to_the_models_people(lfw, lfw_gender):
    test_people = set(lfw.classes)
    assert (lfw.disjoint.y == -1).all() and len(test_people) == lfw.num_classes  # trained on others only
    assert lfw_gender.accuracy(lfw.test) > 0.7
    assert lfw_gender.balanced_accuracy(lfw.test) > 0.7  # not just "always male" (~90 % of these images)


def test_attribute_metrics_on_originals_and_noise(lfw, lfw_detector, lfw_gender):
    idx = torch.randperm(len(lfw.test), generator=gen(8))[:120]  # test people come sorted by name
    sub = Split(lfw.test.x[idx], lfw.test.y[idx], {"gender": lfw.test.attrs["gender"][idx]})
    same = attribute_metrics(sub.x, sub, lfw_detector, lfw_gender)
    assert same["n_df"] == same["n_df_original"] == round(same["detector_rate_original"] * 120)
    assert same["n_df"] > 0.9 * 120
    assert same["n_cg"] == same["n_cg_original"] and same["n_cg"] > 0.7 * same["n_df"]
    noise = torch.rand(sub.x.shape, generator=gen(7)) * 2 - 1
    rand = attribute_metrics(noise, sub, lfw_detector, lfw_gender)
    assert rand["n_df"] <= 0.05 * 120 and rand["n_cg"] <= rand["n_df"]
    assert rand["n_df_original"] == same["n_df_original"]


def test_a_calibrated_detector_survives_pickling(lfw_subset):
    """The farm ships the judge to attacker actors through Ray's object store (pickle);
    the compiled cascade is rebuilt, the calibration kept."""
    import pickle

    faces, non_faces = lfw_subset
    det = FaceDetector(UNIT).calibrate(faces[:50], grid=SMALL_GRID)
    copy = pickle.loads(pickle.dumps(det))
    assert copy.params == det.params and copy.calibration == det.calibration
    both = torch.cat([faces[50:], non_faces])
    assert np.array_equal(copy.detect(both), det.detect(both))


def test_attribute_judge_needs_gender_and_other_people(lfw_subset):
    from pp_cluster.privacy.attributes import AttributeJudge

    faces, _ = lfw_subset
    no_gender = Split(faces, torch.zeros(len(faces), dtype=torch.long))
    with pytest.raises(ValueError, match="gender labels and a disjoint split"):
        AttributeJudge.for_dataset(no_gender, None, UNIT)


def test_attribute_judge_on_real_lfw_scores_originals_like_its_parts(lfw):
    from pp_cluster.privacy.attributes import AttributeJudge

    judge = AttributeJudge.for_dataset(lfw.test, lfw.disjoint, lfw.value_range, n_calibrate=60)
    sub = Split(lfw.test.x[:40], lfw.test.y[:40], {"gender": lfw.test.attrs["gender"][:40]})
    scores = judge.score(sub.x, sub)
    assert scores == attribute_metrics(sub.x, sub, judge.detector, judge.classifier)
    assert scores["n_ti"] == 40 and scores["n_df"] > 30
