"""segflow.data.plan: the working resolution and crop follow the data and the budget."""

import numpy as np

from segflow.data.plan import MIN_LONG_SIDE, object_sizes, plan_scale

NAMES = ["background", "thing"]


def plan_for(object_pct: float, image=(1024, 1280), count=20, **rules):
    """A plan for `count` images where every object is `object_pct` % of the long side across."""
    sizes = [image] * count
    objects = {1: [object_pct / 100] * 50}
    settings = {"min_object_px": 12, "pixels_per_epoch": 1_500_000, "max_crop": 512, **rules}
    return plan_scale(sizes, objects, NAMES, "auto", background=[0], **settings)


def test_tiny_objects_get_a_larger_working_resolution_than_large_ones():
    tiny, large = plan_for(0.5), plan_for(30)
    assert tiny["long_side"] == 1280 and tiny["limited_by"] == "median image"  # 12 px needs 2400: capped
    assert large["long_side"] < tiny["long_side"] and large["long_side"] >= MIN_LONG_SIDE
    assert large["limited_by"] == "budget"  # 30% objects survive any size: the budget decides


def test_an_epoch_stays_within_the_pixel_budget():
    for count in (5, 50, 500):
        plan = plan_for(0.5, count=count)
        side = plan["crop"][0]
        assert side % 32 == 0 and side <= 512
        assert count * side * side * plan["crops_per_image"] <= 1_500_000 or side == 64
    assert plan_for(0.5, count=500)["crop"][0] < plan_for(0.5, count=5)["crop"][0]


def test_the_same_data_gives_the_same_plan():
    assert plan_for(3) == plan_for(3)


def test_a_fixed_size_is_a_letterbox_without_padding():
    plan = plan_scale([(240, 320)] * 4, {1: [0.1]}, NAMES, 128, 12, 1_500_000, 512)
    assert plan["mode"] == "fixed" and plan["long_side"] == 128 and plan["crop"] == plan["tile"] == [128, 128]


def test_object_sizes_measure_thickness():
    mask = np.zeros((100, 100), np.uint8)
    mask[10:15, 0:100] = 1  # a river 5 px wide
    mask[40:60, 40:60] = 1  # a 20 px square
    sizes = sorted(object_sizes(mask, 2)[1])
    assert sizes == [5.0, 20.0]
    mask[90, 90] = 1  # a one-pixel fragment: counted, not measured
    assert np.isnan(object_sizes(mask, 2, min_area=72)[1]).sum() == 1
