"""8-bit quantisation matches the PNG path bit for bit; parallel decoding equals serial decoding."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from iqabench.execution.image_tensors import (
    ParallelDecoder,
    decode_serially,
    pil_to_uint8,
    quantize,
    to_pil,
    to_unit_float,
)
from iqabench.store.store import Store, content_key


def _diffusers_pil(images: torch.Tensor) -> list[Image.Image]:
    """diffusers' own path for output_type='pil' (pt_to_numpy then numpy_to_pil)."""
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor.numpy_to_pil(VaeImageProcessor.pt_to_numpy(images))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_quantize_gives_the_bytes_of_diffusers_pil_output_and_of_the_decoded_png(dtype):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 24, 16, generator=generator).to(dtype)
    images[0, 0, 0, :4] = torch.tensor([0.5 / 255, 1.5 / 255, 254.5 / 255, 1.0])  # ties and the top end
    reference = _diffusers_pil(images)
    quantized = quantize(images)
    for q, ref in zip(quantized, reference, strict=True):
        assert np.array_equal(np.asarray(to_pil(q)), np.asarray(ref))
        buffer = io.BytesIO()
        to_pil(q).save(buffer, format="PNG")
        ref_buffer = io.BytesIO()
        ref.save(ref_buffer, format="PNG")
        assert buffer.getvalue() == ref_buffer.getvalue()  # the cached PNG is bit-identical
        decoded = Image.open(io.BytesIO(buffer.getvalue()))
        # the float the metric sees: decode path (numpy, as the runner always did) == in-memory path
        from_png = torch.from_numpy(np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
        assert torch.equal(to_unit_float(q), from_png)


def _store_with_images(tmp_path, n, sizes=((16, 16),)):
    store = Store(tmp_path)
    keys = []
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        key = content_key("test", i)
        store.put_image(key, Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
        keys.append(key)
    return store, keys


def test_parallel_decoder_equals_serial_decoding_in_order_and_groups_sizes(tmp_path):
    store, keys = _store_with_images(tmp_path, 10, sizes=((16, 16), (8, 24)))
    serial = dict(zip(keys, decode_serially(store.load_image, keys), strict=True))
    batches = [keys[i : i + 4] for i in range(0, len(keys), 4)]
    seen = []
    for batch_keys, result in zip(batches, ParallelDecoder(store.load_image, workers=3, prefetch=1).batches(batches),
                                  strict=True):
        assert not result.failed
        got = [k for b in result.batches for k in b.keys]
        assert sorted(got) == sorted(batch_keys)
        for batch in result.batches:
            assert batch.images.dtype == torch.uint8 and len({tuple(t.shape) for t in batch.images}) == 1
            for key, tensor in zip(batch.keys, batch.images, strict=True):
                assert torch.equal(tensor, serial[key])
        seen.extend(got)
    assert sorted(seen) == sorted(keys)


def test_parallel_decoder_reports_a_corrupt_file_and_decodes_the_rest(tmp_path):
    store, keys = _store_with_images(tmp_path, 4)
    store.image_path(keys[1]).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (result,) = list(ParallelDecoder(store.load_image, workers=2).batches([keys]))
    assert set(result.failed) == {keys[1]}
    assert sorted(k for b in result.batches for k in b.keys) == sorted(set(keys) - {keys[1]})


def test_pil_round_trip_is_exact():
    array = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    tensor = pil_to_uint8(Image.fromarray(array))
    assert tensor.shape == (3, 5, 7) and np.array_equal(np.asarray(to_pil(tensor)), array)


def test_generate_uint8_prefers_tensors_unless_a_subclass_overrides_generate():
    from iqabench.execution.image_tensors import generate_uint8

    class Base:
        def generate(self, items):
            return [Image.new("RGB", (2, 2), (9, 9, 9)) for _ in items]

        def generate_tensors(self, items):
            return [torch.full((3, 2, 2), 1, dtype=torch.uint8) for _ in items]

    class Custom(Base):
        def generate(self, items):
            return [Image.new("RGB", (2, 2), (7, 7, 7)) for _ in items]

    class PilOnly:
        def generate(self, items):
            return [Image.new("RGB", (2, 2), (5, 5, 5)) for _ in items]

    assert int(generate_uint8(Base(), [0])[0][0, 0, 0]) == 1
    assert int(generate_uint8(Custom(), [0])[0][0, 0, 0]) == 7
    assert int(generate_uint8(PilOnly(), [0, 1])[1][0, 0, 0]) == 5
