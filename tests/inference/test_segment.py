"""segflow.inference.segment: any size in, the same size out; tiles blend without seams."""

import numpy as np
import pytest

from segflow.inference.segment import Segmenter, blend_weights, tile_origins


def constant(value: float, classes: int = 3):
    def run(batch: np.ndarray) -> np.ndarray:
        out = np.zeros((len(batch), classes, *batch.shape[2:]), np.float32)
        out[:, 1] = value
        return out

    return run


def red_minus_blue(batch: np.ndarray) -> np.ndarray:
    """Class 1 where red > blue: a per-pixel rule, so tiling cannot change its answer."""
    return np.stack([batch[:, 2] - batch[:, 0], batch[:, 0] - batch[:, 2]], 1)


@pytest.mark.parametrize("size", [(45, 70), (33, 33), (257, 513), (600, 97)])
@pytest.mark.parametrize("long_side", [None, 300, 129, 31])
def test_any_size_comes_back_at_its_own_size(size, long_side):
    image = np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)
    mask = Segmenter(constant(1.0), long_side, (64, 96)).predict_one(image)
    assert mask.shape == size and mask.dtype == np.uint8


def test_a_constant_network_gives_a_constant_mask_through_many_tiles():
    image = np.zeros((300, 500, 3), np.uint8)
    seen = []

    def run(batch):
        seen.append(len(batch))
        return constant(2.5)(batch)

    mask = Segmenter(run, None, (64, 64), batch_size=4).predict_one(image)
    assert (mask == 1).all()
    assert sum(seen) > 20 and max(seen) <= 4  # tiled, and batched


def test_tiles_blend_without_seams_for_a_per_pixel_rule():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (200, 330, 3), dtype=np.uint8)
    truth = (image[:, :, 0].astype(int) > image[:, :, 2]).astype(np.uint8)
    mask = Segmenter(red_minus_blue, None, (64, 64)).predict_one(image)
    np.testing.assert_array_equal(mask, truth)


def test_flip_test_time_augmentation_averages_the_mirror():
    seen = []

    def run(batch):
        seen.append(batch.copy())
        return red_minus_blue(batch)

    image = np.random.default_rng(2).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    mask = Segmenter(run, None, (64, 64), flip=True).predict_one(image)
    assert len(seen) == 2 and np.array_equal(seen[1], seen[0][:, :, :, ::-1])
    assert (mask == (image[:, :, 0].astype(int) > image[:, :, 2])).all()


def test_tiles_cover_the_image_and_overlap():
    assert tile_origins(64, 64) == [0]
    origins = tile_origins(300, 64)
    assert origins[0] == 0 and origins[-1] == 300 - 64
    assert all(b - a <= 48 for a, b in zip(origins, origins[1:]))  # 25% overlap at least
    weights = blend_weights(64, 64)
    assert weights[32, 32] == 1.0 and 0 < weights[0, 0] < weights[8, 8] < 1.0


def test_a_downscaled_prediction_is_resized_back_smoothly():
    # Half size (long side 50 of 101): a diagonal edge comes back along the diagonal, not in 2-px steps.
    yy, xx = np.mgrid[:101, :101]
    image = np.zeros((101, 101, 3), np.uint8)
    image[..., 0] = np.where(xx > yy, 200, 0)
    image[..., 2] = 100
    mask = Segmenter(red_minus_blue, 50, (64, 64)).predict_one(image)
    truth = (xx > yy).astype(np.uint8)
    assert (mask != truth).mean() < 0.02


@pytest.mark.parametrize(
    "size, long_side",
    [
        ((7000, 2000), 320),  # 175 rows -> 8: bands of 175-row blocks
        ((3024, 4032), 320),  # 63 -> 5
        ((2449, 3264), 320),  # 2449 rows share no factor with 240: all rows at once
        ((400, 300), 640),  # enlarged: all rows at once
        ((6400, 2400), 320),  # 20 -> 1 (OpenCV's integer-ratio path)
    ],
)
def test_shrinking_a_band_at_a_time_gives_the_same_bytes(size, long_side):
    """Segmenter.scaled_rows (the service's path: Pillow's rows, never a full-size RGB copy)
    equals Segmenter.scaled of the whole image, byte for byte, and asks for small bands."""
    image = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    segmenter = Segmenter(constant(1.0), long_side, (64, 64))
    asked = []

    def rows(top, bottom):
        asked.append(bottom - top)
        return image[top:bottom]

    banded = segmenter.scaled_rows(*size, rows)
    assert np.array_equal(banded, segmenter.scaled(image))
    assert sum(asked) == size[0]
    if size in ((7000, 2000), (3024, 4032), (6400, 2400)):
        assert len(asked) > 1 and max(asked) * size[1] <= 8_000_000, asked
    else:
        assert asked == [size[0]]
