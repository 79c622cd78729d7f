"""The in-memory form every data set loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


def require_folder(root: Path, what: str, layout: str) -> None:
    """A data root must be an existing folder: say which of the two it is not."""
    if root.is_dir():
        return
    if root.exists():
        raise NotADirectoryError(f"{what} root {root} is a file, not a folder (expected layout {layout})")
    raise FileNotFoundError(f"{what} folder {root} does not exist (expected layout {layout})")


@dataclass(frozen=True)
class Split:
    """Images and labels of one split.

    ``x`` is float32 ``N×C×H×W`` in the data set's ``value_range``; ``y`` is int64 class
    ids. ``attrs`` maps an attribute name (e.g. ``"gender"``) to an int64 tensor of
    length N where ``-1`` means "no trustworthy label" (never guessed).
    """

    x: torch.Tensor
    y: torch.Tensor
    attrs: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class Dataset:
    """A loaded data set: the model's train/test splits and, where the data set has one,
    a ``disjoint`` split of images whose identities are *not* among ``classes`` (the
    realistic attacker's own data; its ``y`` is ``-1``)."""

    name: str
    train: Split
    test: Split
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # C, H, W
    value_range: tuple[float, float]  # (0, 1) or (-1, 1)
    meta: dict[str, Any]
    disjoint: Split | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)
