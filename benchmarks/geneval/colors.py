"""GenEval's colour step: CLIP zero-shot among ten colours on each object's masked crop.

As in the official evaluator: the object is pasted through its mask onto a
uniform #999 grey background (so the background colour does not leak into the
prediction), cropped to its box, and classified with one zero-shot classifier
per object class, built from three templates whose normalised text embeddings
are averaged and re-normalised (clip_benchmark's ``zero_shot_classifier``).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .clip import ClipModel
from .rules import COLORS, Detection

BACKGROUND = "#999"
TEMPLATES = ("a photo of a {c} {object}", "a photo of a {c}-colored {object}", "a photo of a {c} object")


def object_crop(image: Image.Image, detection: Detection, background: str = BACKGROUND) -> Image.Image:
    """The object through its mask over a uniform background, cropped to its box (box only when no mask)."""
    image = image.convert("RGB")
    if detection.mask is not None:
        mask = np.asarray(detection.mask, dtype=bool)
        if mask.shape != (image.height, image.width):
            raise ValueError(f"mask of shape {mask.shape} does not match the image size {image.height}x{image.width}")
        blank = Image.new("RGB", image.size, color=background)
        image = Image.composite(image, blank, Image.fromarray(mask))
    return image.crop(tuple(detection.box[:4]))


class ColorClassifier:
    """Callable ``(detections, classname) -> colours``: the ``classify_colors`` hook of :func:`rules.evaluate`."""

    def __init__(self, clip: ClipModel, image: Image.Image | None = None):
        self.clip = clip
        self.image = image
        self._weights: dict[str, torch.Tensor] = {}

    def for_image(self, image: Image.Image) -> ColorClassifier:
        """The same classifier (sharing its per-class text weights) bound to another image."""
        other = ColorClassifier(self.clip, image)
        other._weights = self._weights
        return other

    def class_weights(self, classname: str) -> torch.Tensor:
        """[D, 10] zero-shot weights for ``classname``, one averaged template embedding per colour."""
        if classname not in self._weights:
            columns = []
            for color in COLORS:
                texts = [t.format(c=color, object=classname) for t in TEMPLATES]
                mean = self.clip.encode_texts(texts).mean(dim=0)
                columns.append(mean / mean.norm())
            self._weights[classname] = torch.stack(columns, dim=1)
        return self._weights[classname]

    def __call__(self, detections: list[Detection], classname: str) -> list[str]:
        if self.image is None:
            raise ValueError("ColorClassifier has no image; call for_image(image) first")
        if not detections:
            return []
        crops = [object_crop(self.image, d) for d in detections]
        logits = 100.0 * self.clip.encode_images(crops) @ self.class_weights(classname)
        return [COLORS[i] for i in logits.argmax(dim=1).tolist()]
