"""Checks on what a generator hands back, before it is cached as a valid image.

A generator with NaN weights, or a spec such as ``guidance_scale=Infinity``,
produces non-finite latents; diffusers' post-processing turns NaN into 0 and
clamps infinities, so what arrives is an all-black (or all-white) picture that
decodes, scores and caches like any other. Such an image is recorded as a
generation failure instead: cached, it would be served to every later run and
benchmark with the same key.
"""

from __future__ import annotations

from PIL import Image


class GeneratedImageError(RuntimeError):
    """A generator output that must not be cached (non-finite latents, a constant image, not an image)."""


def generated_image_problem(image: object) -> str | None:
    """Why ``image`` is not a usable generated image, or None when it is."""
    if not isinstance(image, Image.Image):
        return f"the generator returned a {type(image).__name__}, not a PIL image"
    if image.width < 1 or image.height < 1:
        return f"the generated image is empty ({image.width}x{image.height})"
    extrema = image.convert("RGB").getextrema()  # ((min, max) per band), computed in C without a numpy copy
    if all(band[0] == band[1] for band in extrema):
        pixel = tuple(int(band[0]) for band in extrema)
        return (f"the generated image is constant (every pixel is {pixel}); non-finite latents (NaN weights, "
                "an infinite guidance scale) produce this")
    return None


def finite_per_item(latents: object) -> list[bool] | None:
    """Per item of a [B, ...] latent tensor: all values finite? None when ``latents`` is not a tensor."""
    import torch

    if not torch.is_tensor(latents) or latents.ndim == 0:
        return None
    return torch.isfinite(latents.detach()).reshape(latents.shape[0], -1).all(dim=1).tolist()
