"""Labeled Faces in the Wild as the paper's photo-to-identity task (Section V-C).

Classes are the people with at least ``min_faces`` images; each person's images are split
80/20 (stratified), so the attacker's evaluation faces are unseen images of known people.
With ``disjoint=True`` the images of everyone else form ``Dataset.disjoint``: the realistic
attacker's own faces, none of them a class of the model. Gender lists, when present, give
every split an ``attrs["gender"]`` (1 male, 0 female, -1 unknown or contradictory).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pp_cluster.data.base import Dataset, Split, require_folder
from pp_cluster.data.common import (
    build_dataset,
    check_bool,
    check_fraction,
    check_int,
    decode_images,
    stratified_split,
    take,
)

VARIANTS = ("lfw-deepfunneled", "lfw_funneled", "lfw")
LAYOUT = "<root>/<Person_Name>/<Person_Name>_NNNN.jpg"
GENDER_FILES = {"male_names.txt": 1, "female_names.txt": 0}
_FILE = re.compile(r"(.+)_\d{4}\.jpg")
VALUE_RANGE = (-1.0, 1.0)  # the paper's face decoders end in tanh
OPTIONS: dict[str, Any] = {
    "min_faces": 30,
    "size": 64,
    "color": True,
    "split_seed": 0,
    "test_fraction": 0.2,
    "disjoint": False,
    "disjoint_max": 3000,
    "gender_root": None,
}


def find_folder(root: Path) -> Path:
    """``root`` itself, or the one LFW variant folder (``lfw``, ``lfw_funneled``,
    ``lfw-deepfunneled``) directly inside it."""
    require_folder(root, "LFW", LAYOUT)
    inside = [root / v for v in VARIANTS if (root / v).is_dir()]
    if len(inside) > 1:
        raise ValueError(
            f"{root} holds several LFW variants ({', '.join(p.name for p in inside)}); "
            "pass the one you mean as root"
        )
    return inside[0] if inside else root


def scan(folder: Path) -> tuple[dict[str, list[str]], int]:
    """Person name -> sorted image file names, and how many other files were ignored.
    A ``.jpg`` whose name does not match its folder means this is not LFW: an error."""
    people: dict[str, list[str]] = {}
    skipped = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.is_dir():
                skipped += 1
                continue
            names = []
            for f in os.listdir(entry.path):
                if not f.lower().endswith(".jpg"):
                    skipped += 1
                elif not ((m := _FILE.fullmatch(f)) and m[1] == entry.name):
                    raise ValueError(f"{Path(entry.path) / f} is not in the LFW layout: expected {LAYOUT}")
                else:
                    names.append(f)
            if names:
                people[entry.name] = sorted(names)
    if not people:
        raise ValueError(f"no LFW images under {folder}: expected {LAYOUT}")
    return dict(sorted(people.items())), skipped


def read_gender_lists(gender_root: Path) -> dict[str, int]:
    """Image name -> 1 (male list only), 0 (female list only) or -1 (in both lists: a
    contradiction, never guessed). CRLF tolerated."""
    table: dict[str, int] = {}
    for fname, label in GENDER_FILES.items():
        path = gender_root / fname
        if not path.is_file():
            raise FileNotFoundError(
                f"gender list {path} is missing (expected {', '.join(GENDER_FILES)} "
                f"in {gender_root}, one Person_Name_NNNN.jpg a line)"
            )
        for name in {line.strip() for line in path.read_text().splitlines() if line.strip()}:
            table[name] = -1 if name in table else label
    return table


def gender_labels(names: list[str], table: dict[str, int]) -> np.ndarray:
    """1 / 0 where exactly one list names the image; -1 where none or both do."""
    return np.fromiter((table.get(n, -1) for n in names), dtype=np.int64, count=len(names))


def _gender_counts(names: list[str], table: dict[str, int]) -> dict[str, int]:
    labels = gender_labels(names, table)
    listed = np.fromiter((n in table for n in names), dtype=bool, count=len(names))
    in_both = listed & (labels == -1)
    people_both = {n.rsplit("_", 1)[0] for n, both in zip(names, in_both) if both}
    return {
        "n_images": len(names),
        "labelled": int(listed.sum()),
        "in_both": int(in_both.sum()),
        "in_neither": int((~listed).sum()),
        "male": int((labels == 1).sum()),
        "female": int((labels == 0).sum()),
        "people_in_both": len(people_both),
    }


def _options(opts: dict[str, Any]) -> dict[str, Any]:
    o = dict(opts)
    o["min_faces"] = check_int("lfw option min_faces", o["min_faces"], 2)
    o["size"] = check_int("lfw option size", o["size"], 1)
    o["color"] = check_bool("lfw option color", o["color"])
    o["split_seed"] = check_int("lfw option split_seed", o["split_seed"], 0)
    o["test_fraction"] = check_fraction("lfw option test_fraction", o["test_fraction"])
    o["disjoint"] = check_bool("lfw option disjoint", o["disjoint"])
    if o["disjoint_max"] is not None:
        o["disjoint_max"] = check_int("lfw option disjoint_max", o["disjoint_max"], 1)
    if o["gender_root"] is not None:
        o["gender_root"] = str(o["gender_root"])
    return o


def _gender(folder: Path, o: dict[str, Any]) -> tuple[Path | None, Any]:
    """The gender lists' folder (the option, else a ``gender`` folder beside the images) and
    the lists read from it; (None, None) when there are none."""
    if o["gender_root"] is not None:
        gender_root = Path(o["gender_root"])
    elif (folder.parent / "gender").is_dir():
        gender_root = folder.parent / "gender"
    else:
        return None, None
    if not gender_root.is_dir():
        raise FileNotFoundError(f"lfw option gender_root: {gender_root} is not a folder")
    return gender_root, read_gender_lists(gender_root)


def _disjoint_people(people: dict[str, list[str]], folder: Path, o: dict[str, Any]) -> dict[str, list[str]]:
    """The people outside the classifier's identities, chosen (and their absence reported)
    before anything is decoded: a seeded subsample of at most disjoint_max of their images
    bounds memory."""
    others = [p for p, files in people.items() if len(files) < o["min_faces"]]
    if not others:
        raise ValueError(
            f"lfw option disjoint=True: everyone under {folder} has >= min_faces="
            f"{o['min_faces']} images, so no one is left for the disjoint split"
        )
    files = [(p, f) for p in others for f in people[p]]
    if o["disjoint_max"] is not None and len(files) > o["disjoint_max"]:
        pick = np.sort(
            np.random.default_rng(o["split_seed"]).choice(len(files), o["disjoint_max"], replace=False)
        )
        files = [files[i] for i in pick]
    sub: dict[str, list[str]] = {}
    for p, f in files:
        sub.setdefault(p, []).append(f)
    return sub


def load(root: Path | None, opts: dict[str, Any]) -> Dataset:
    if root is None:
        raise ValueError(
            f"lfw needs root: the folder in the layout {LAYOUT} (or its parent); "
            "`pp-farm data fetch lfw --root DIR` downloads it"
        )
    o = _options(opts)
    folder = find_folder(Path(root))
    people, skipped = scan(folder)
    classes = [p for p, files in people.items() if len(files) >= o["min_faces"]]
    if len(classes) < 2:
        most = max(len(f) for f in people.values())
        raise ValueError(
            f"lfw option min_faces={o['min_faces']} leaves {len(classes)} people under {folder} "
            f"(need >= 2; the most images of one person is {most})"
        )

    gender_root, gender = _gender(folder, o)

    # Split before decoding: a bad test_fraction fails in milliseconds, and the split does
    # not depend on which files turn out corrupt (those just drop out of their side).
    counts = [len(people[p]) for p in classes]
    train_idx, test_idx = stratified_split(
        np.repeat(np.arange(len(classes)), counts), o["test_fraction"], o["split_seed"], f"lfw under {folder}"
    )

    sub = _disjoint_people(people, folder, o) if o["disjoint"] else {}

    def load_split(groups: dict[str, list[str]], labels: list[int], kind: str) -> tuple[Split, Any]:
        """Decode (or read from the cache) these people's images as one split."""
        names = [f for fs in groups.values() for f in fs]
        files = [f"{p}/{f}" for p, fs in groups.items() for f in fs]
        y = np.repeat(labels, [len(fs) for fs in groups.values()]).astype(np.int64)
        dec = decode_images(kind, folder, files, o["size"], o["color"])
        attrs = {} if gender is None else {"gender": torch.from_numpy(gender_labels(names, gender)[dec.kept])}
        return Split(torch.from_numpy(dec.images), torch.from_numpy(y[dec.kept]), attrs), dec

    full, dec = load_split({p: people[p] for p in classes}, list(range(len(classes))), "lfw")
    position = np.full(sum(counts), -1)  # file index -> index among the decoded images
    position[dec.kept] = np.arange(len(dec.kept))
    train_idx, test_idx = (i[i >= 0] for i in (position[train_idx], position[test_idx]))
    meta: dict[str, Any] = {
        "source": str(folder),
        "variant": folder.name,
        "options": o,
        "cache_key": dec.cache_key,
        "cache_hit": dec.cache_hit,
        "n_people_total": len(people),
        "n_images_total": sum(len(f) for f in people.values()),
        "n_skipped": skipped,
        "bad": list(dec.bad),
        "gender_root": None if gender_root is None else str(gender_root),
        "gender": None
        if gender is None
        else _gender_counts([f for fs in people.values() for f in fs], gender),
    }

    disjoint = None
    if sub:
        disjoint, ddec = load_split(sub, [-1] * len(sub), "lfw-disjoint")
        meta.update(
            disjoint_cache_key=ddec.cache_key,
            disjoint_cache_hit=ddec.cache_hit,
            disjoint_people=list(sub),
            bad=meta["bad"] + list(ddec.bad),
        )
    meta["n_bad"] = len(meta["bad"])
    return build_dataset(
        "lfw", take(full, train_idx), take(full, test_idx), classes, VALUE_RANGE, meta, disjoint
    )
