"""MMA's training images (paper section 3.1): SynthAffect's three sources, or the real image
sets a user has (AffectNet, EmotioNet, Aff-Wild2), with or without SynthAffect's, split into
train / val / test. The real sets' validation parts serve as both val and test (their test
labels are not public); EmotioNet, which has no split, gives every tenth image to val.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from mmarnn_min.data.synth import ImageSet, SynthConfig, make_images

SPLITS = ("train", "val", "test")


def image_splits(data: SynthConfig | Mapping[str, ImageSet]) -> Mapping[str, ImageSet]:
    """The train, val and test images: SynthAffect's for a SynthConfig, else ``data`` itself,
    which must hold those three splits."""
    if isinstance(data, SynthConfig):
        return {split: make_images(data, split) for split in SPLITS}
    missing = set(SPLITS) - set(data)
    if missing:
        raise ValueError(f"mma: the image data lack the split(s) {', '.join(sorted(missing))}")
    return data


def real_image_splits(image_size: int, synth: SynthConfig | None = None, affectnet: str = "",
                      emotionet: str = "", emotionet_images: str = "", affwild2: str = "",
                      affwild2_every: int = 10) -> dict[str, ImageSet]:
    """The real image sets given (paths; "" = not given), aligned to ``image_size`` crops,
    plus SynthAffect's images of ``synth`` unless it is None, split into train / val / test
    (test = val)."""
    from mmarnn_min.data.affectnet import read_affectnet
    from mmarnn_min.data.affwild2 import read_affwild2
    from mmarnn_min.data.emotionet import read_emotionet
    from mmarnn_min.data.real_images import load_image_set

    sets: dict[str, list[ImageSet]] = {"train": [], "val": []}
    if affectnet:
        for split in sets:
            sets[split].append(load_image_set(read_affectnet(affectnet, split), image_size, source=0))
    if emotionet:
        everything = load_image_set(read_emotionet(emotionet, emotionet_images or "."), image_size, source=1)
        is_val = np.arange(len(everything)) % 10 == 9
        sets["train"].append(select_images(everything, ~is_val))
        sets["val"].append(select_images(everything, is_val))
    if affwild2:
        for split in sets:
            sets[split].append(load_image_set(read_affwild2(affwild2, split, affwild2_every), image_size, source=2))
    if synth is not None:
        for split in sets:
            sets[split].append(make_images(synth, split))
    train, val = concat_images(sets["train"]), concat_images(sets["val"])
    return {"train": train, "val": val, "test": val}


def select_images(images: ImageSet, keep: np.ndarray) -> ImageSet:
    return ImageSet(**{f.name: getattr(images, f.name)[keep] for f in dataclasses.fields(ImageSet)})


def concat_images(sets: list[ImageSet]) -> ImageSet:
    """One ImageSet of several (held in memory: N * S * S * 3 bytes)."""
    return ImageSet(**{f.name: np.concatenate([getattr(s, f.name) for s in sets]) for f in dataclasses.fields(ImageSet)})
