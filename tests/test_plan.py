"""segflow.data.plan: the working scale and crop follow the data and the budget."""

import numpy as np

from segflow.data.plan import MIN_SHORT_SIDE, object_sizes, plan_scale

NAMES = ["background", "thing"]


def plan_for(object_px: int, image=(1024, 1280), count=20, **rules):
    sizes = [image] * count
    objects = {1: [float(object_px)] * 50}
    settings = {"min_object_px": 12, "pixels_per_epoch": 2_500_000, "max_crop": 512, **rules}
    return plan_scale(sizes, objects, NAMES, "auto", background=[0], **settings)


def test_tiny_objects_get_a_larger_scale_than_large_ones():
    tiny, large = plan_for(8), plan_for(200)
    assert tiny["scale"] == 1.0  # 8 px objects: never shrunk (and never enlarged)
    assert large["scale"] == 0.12 or large["scale"] < 0.2  # 200 px -> 12 px needs 0.06, context keeps more
    assert large["scale"] * 1024 >= MIN_SHORT_SIDE - 1
    assert tiny["scale"] > large["scale"]


def test_an_epoch_stays_within_the_pixel_budget():
    for count in (5, 50, 500):
        plan = plan_for(8, count=count)
        side = plan["crop"][0]
        assert side % 32 == 0 and side <= 512
        assert count * side * side * plan["crops_per_image"] <= 2_500_000 or side == 64
    small = plan_for(8, count=500)
    assert small["crop"][0] < plan_for(8, count=5)["crop"][0]


def test_the_same_data_gives_the_same_plan():
    assert plan_for(30) == plan_for(30)


def test_a_fixed_size_fits_the_median_image():
    plan = plan_scale([(240, 320)] * 4, {1: [10.0]}, NAMES, 128, 12, 2_500_000, 512)
    assert plan["mode"] == "fixed" and plan["scale"] == 0.4 and plan["crop"] == plan["tile"] == [128, 128]


def test_object_sizes_measure_thickness():
    mask = np.zeros((100, 100), np.uint8)
    mask[10:15, 0:100] = 1  # a river 5 px wide
    mask[40:60, 40:60] = 1  # a 20 px square
    sizes = sorted(object_sizes(mask, 2)[1])
    assert sizes == [5.0, 20.0]
    mask[90, 90] = 1  # a one-pixel fragment: counted, not measured
    assert np.isnan(object_sizes(mask, 2, min_area=72)[1]).sum() == 1
