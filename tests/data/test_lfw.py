"""The LFW loader on small folders in the LFW layout, written here with real JPEGs: each
image is one flat colour whose red level says whose image it is and whose green level says
which of theirs, so the pixels tell where every loaded image came from."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pp_cluster.data import common, load_dataset

# Person -> number of images; sorted names, so class ids follow this order.
PEOPLE = {"Alice_Adams": 6, "Bob_Brown": 5, "Carl_Cole": 4, "Dora_Diaz": 2, "Emil_Eck": 1}
GREY = {p: 20 + 40 * i for i, p in enumerate(PEOPLE)}


def _write_lfw(folder: Path, people: dict[str, int] = PEOPLE, side: int = 16) -> Path:
    for person, n in people.items():
        (folder / person).mkdir(parents=True, exist_ok=True)
        for k in range(1, n + 1):
            colour = (GREY.get(person, 128), 6 * k, 128)
            Image.new("RGB", (side, side), colour).save(folder / person / f"{person}_{k:04d}.jpg")
    return folder


def _levels(split) -> np.ndarray:
    """Mean 0..255 level of each channel of each (colour) image; the loader's range is (-1, 1)."""
    return ((split.x.mean(dim=(2, 3)) + 1) / 2 * 255).numpy()


def _person(split) -> list[str]:
    """Whose image each one is, read back from its red level."""
    names, levels = list(GREY), np.array(list(GREY.values()))
    return [names[int(np.abs(levels - r).argmin())] for r in _levels(split)[:, 0]]


def _image_ids(split) -> list[tuple[str, int]]:
    """(person, image number) of each image, from its red and green levels."""
    return list(zip(_person(split), np.rint(_levels(split)[:, 1] / 6).astype(int).tolist()))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("PP_CLUSTER_CACHE", str(d))
    return d


@pytest.fixture
def lfw_root(tmp_path) -> Path:
    return _write_lfw(tmp_path / "lfw-deepfunneled")


def test_filter_and_split(lfw_root, cache):
    ds = load_dataset("lfw", lfw_root, min_faces=4, size=8)
    assert ds.classes == ("Alice_Adams", "Bob_Brown", "Carl_Cole")
    assert (len(ds.train), len(ds.test)) == (12, 3) and ds.image_shape == (3, 8, 8)
    assert (
        ds.value_range == (-1.0, 1.0)
        and ds.train.x.dtype == torch.float32
        and ds.train.y.dtype == torch.int64
    )
    for split in (ds.train, ds.test):
        assert set(split.y.tolist()) == {0, 1, 2}  # stratified by person: everyone in both
        assert _person(split) == [ds.classes[i] for i in split.y.tolist()]  # labels match the pixels
    assert ds.meta["n_people_total"] == 5 and ds.meta["n_images_total"] == 18
    assert ds.meta["n_bad"] == 0 and ds.meta["gender"] is None and "gender" not in ds.train.attrs
    assert ds.disjoint is None


def test_options_grey_seed_and_parent_root(lfw_root, cache):
    grey = load_dataset(
        "lfw", lfw_root.parent, min_faces=4, size=8, color=False
    )  # parent holding the variant
    assert grey.image_shape == (1, 8, 8) and grey.meta["variant"] == "lfw-deepfunneled"
    ds = load_dataset("lfw", lfw_root, min_faces=4, size=8)
    assert grey.meta["cache_key"] != ds.meta["cache_key"]
    ids = _image_ids(ds.train) + _image_ids(ds.test)
    assert sorted(ids) == [(p, k) for p in ds.classes for k in range(1, PEOPLE[p] + 1)]  # each image once
    other = load_dataset("lfw", lfw_root, min_faces=4, size=8, split_seed=1)
    assert set(_image_ids(other.test)) != set(_image_ids(ds.test))
    assert other.meta["cache_key"] == ds.meta["cache_key"]  # the split does not affect decoding


def test_second_load_is_served_from_cache(lfw_root, cache, monkeypatch):
    first = load_dataset("lfw", lfw_root, min_faces=4, size=8)
    assert first.meta["cache_hit"] is False
    entries = list(cache.iterdir())
    assert [p.suffix for p in entries] == [".npz"]  # no temp files left behind

    def no_decoding(*args):
        raise AssertionError("decoded although the cache holds these images")

    monkeypatch.setattr(common, "_decode", no_decoding)
    second = load_dataset("lfw", lfw_root, min_faces=4, size=8)
    assert second.meta["cache_hit"] is True and torch.equal(second.train.x, first.train.x)

    # Different decoding options or changed files need decoding again.
    with pytest.raises(AssertionError, match="decoded although"):
        load_dataset("lfw", lfw_root, min_faces=4, size=9)
    img = lfw_root / "Bob_Brown" / "Bob_Brown_0001.jpg"
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded although"):
        load_dataset("lfw", lfw_root, min_faces=4, size=8)


def test_unwritable_cache_only_warns(lfw_root, cache, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(common.tempfile, "mkstemp", disk_full)
    with pytest.warns(RuntimeWarning, match="could not write the image cache"):
        ds = load_dataset("lfw", lfw_root, min_faces=4, size=8)
    assert len(ds.train) == 12 and not any(cache.glob("*.npz"))


def test_concurrent_loads_agree(lfw_root, cache):
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(load_dataset("lfw", lfw_root, min_faces=4, size=8)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(torch.equal(r.train.x, results[0].train.x) for r in results)
    assert [p.suffix for p in cache.iterdir()] == [".npz"]


def test_disjoint_split(lfw_root, cache):
    ds = load_dataset("lfw", lfw_root, min_faces=4, size=8, disjoint=True)
    assert ds.disjoint is not None and len(ds.disjoint) == 3 and (ds.disjoint.y == -1).all()
    assert set(_person(ds.disjoint)) == {"Dora_Diaz", "Emil_Eck"}
    assert not set(_person(ds.disjoint)) & set(ds.classes)
    capped = load_dataset("lfw", lfw_root, min_faces=4, size=8, disjoint=True, disjoint_max=2)
    again = load_dataset("lfw", lfw_root, min_faces=4, size=8, disjoint=True, disjoint_max=2)
    assert len(capped.disjoint) == 2 and torch.equal(capped.disjoint.x, again.disjoint.x)
    full = _write_lfw(lfw_root.parent / "lfw_funneled", {p: PEOPLE[p] for p in ds.classes})
    with pytest.raises(ValueError, match="no one is left"):
        load_dataset("lfw", full, min_faces=4, size=8, disjoint=True)


def test_gender_lists(lfw_root, cache):
    gender = lfw_root.parent / "gender"
    gender.mkdir()
    male = [f"Alice_Adams_{k:04d}.jpg" for k in range(1, 7)] + ["Bob_Brown_0001.jpg", "Dora_Diaz_0001.jpg"]
    female = ["Bob_Brown_0001.jpg"] + [f"Carl_Cole_{k:04d}.jpg" for k in range(1, 5)] + ["Emil_Eck_0001.jpg"]
    (gender / "male_names.txt").write_bytes("\r\n".join(male).encode() + b"\r\n")
    (gender / "female_names.txt").write_bytes("\r\n".join(female).encode() + b"\r\n")
    ds = load_dataset("lfw", lfw_root, min_faces=4, size=8, disjoint=True)  # found next to the LFW folder
    assert ds.meta["gender"] == {
        "n_images": 18,
        "labelled": 13,
        "in_both": 1,
        "in_neither": 5,
        "male": 7,
        "female": 5,
        "people_in_both": 1,
    }
    expected = {
        "Alice_Adams": {1},
        "Bob_Brown": {-1},
        "Carl_Cole": {0},
        "Dora_Diaz": {1, -1},
        "Emil_Eck": {0},
    }
    for split in (ds.train, ds.test, ds.disjoint):
        seen: dict[str, set[int]] = {}
        for who, g in zip(_person(split), split.attrs["gender"].tolist()):
            seen.setdefault(who, set()).add(g)
        assert all(seen[p] <= expected[p] for p in seen)
    everyone = torch.cat([ds.train.attrs["gender"], ds.test.attrs["gender"]])
    assert sorted(everyone.tolist()) == [-1] * 5 + [0] * 4 + [1] * 6  # Bob's 5 are unknown (both / neither)
    (gender / "female_names.txt").unlink()
    with pytest.raises(FileNotFoundError, match="female_names.txt"):
        load_dataset("lfw", lfw_root, min_faces=4, size=8)


def test_bad_input(tmp_path, lfw_root, cache, monkeypatch):
    monkeypatch.setattr(
        common, "_decode", lambda *a: pytest.fail("decoding started before the input was checked")
    )
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset("lfw", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no LFW images"):
        load_dataset("lfw", tmp_path / "empty")
    with pytest.raises(ValueError, match="needs root"):
        load_dataset("lfw")
    with pytest.raises(ValueError, match="min_faces=7 leaves 0 people"):
        load_dataset("lfw", lfw_root, min_faces=7)
    with pytest.raises(ValueError, match="cannot split 15 images of 3 classes .* test_fraction=0.1"):
        load_dataset("lfw", lfw_root, min_faces=4, test_fraction=0.1)
    wrong = tmp_path / "photos" / "Holiday"
    wrong.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(wrong / "beach.jpg")
    with pytest.raises(ValueError, match="beach.jpg is not in the LFW layout"):
        load_dataset("lfw", tmp_path / "photos")
    (tmp_path / "lfw").mkdir()  # two variants side by side: ambiguous
    with pytest.raises(ValueError, match="several LFW variants"):
        load_dataset("lfw", tmp_path)


def test_corrupt_images(tmp_path, cache, monkeypatch):
    root = _write_lfw(tmp_path / "lfw", {"Alice_Adams": 40, "Bob_Brown": 40, "Carl_Cole": 40}, side=8)
    bad = root / "Bob_Brown" / "Bob_Brown_0007.jpg"
    bad.write_bytes(b"not a jpeg")
    ds = load_dataset("lfw", root, min_faces=30, size=8)  # 1 of 120 bad: skipped and counted
    assert ds.meta["n_bad"] == 1 and ds.meta["bad"] == ["Bob_Brown/Bob_Brown_0007.jpg"]
    assert len(ds.train) + len(ds.test) == 119
    assert ((torch.cat([ds.train.y, ds.test.y]) == 1).sum()) == 39

    (root / "Carl_Cole" / "Carl_Cole_0003.jpg").write_bytes(b"\xff\xd8\xff truncated")
    with pytest.raises(ValueError, match=r"2 of 120 images .*could not be decoded.*Bob_Brown_0007\.jpg"):
        load_dataset("lfw", root, min_faces=30, size=8)
