"""Which real images generated ones are compared with: a split, optionally a fixed random subset.

One class for the space file's `reference:` keys (search.settings validates them with it) and for
the metric path (results.features), so its checks live once. It is light: pydantic only, torch
imported where images are taken, so that checking a space file answers at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from .names import REFERENCE_SPLITS

if TYPE_CHECKING:
    import torch

    from cvae_core.data import ImageData

SUBSET_SEED = 0  # the subset of n images is the same one every time, on every node


class Reference(BaseModel):
    """The real images samples are compared with: a split, and n for a fixed random subset."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    split: Literal[REFERENCE_SPLITS] = "train"
    n: int | None = Field(None, ge=2, description="null: the whole split")

    def _split(self, data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
        from cvae_core.data import split

        return (data.test_x, data.test_y) if self.split == "test" else split(data, self.split)[:2]

    def size(self, data: ImageData) -> int | None:
        """How many images of `data` it takes; None: the whole split (n is None or not below its size)."""
        train, test = len(data.train_x), len(data.test_x)
        whole = {"train": train, "test": test}.get(self.split, train + test)
        return self.n if self.n is not None and self.n < whole else None

    def images(self, data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images, labels) of `data`; a subset is the same fixed one every time."""
        import torch

        x, y = self._split(data)
        n = self.size(data)
        if n is not None:
            keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(SUBSET_SEED))[:n]
            x, y = x[keep], y[keep]
        return x, y

    def label(self, data: ImageData) -> str:
        """How the leaderboard names the images actually used, e.g. 'cifar10-jpeg:train[500]';
        no count when they are the whole split (also when n is not below its size)."""
        from cvae_core.sources import torchvision_name

        source = torchvision_name(data.source) or Path(data.source).stem
        n = self.size(data)
        return f"{source}:{self.split}" + (f"[{n}]" if n is not None else "")
