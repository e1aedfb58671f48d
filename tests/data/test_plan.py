"""segflow.data.plan: the working resolution and crop follow the data, not the image count."""

import numpy as np

from segflow.data.plan import MIN_CROP, MIN_LONG_SIDE, object_sizes, plan_scale
from segflow.prepared import Plan

NAMES = ["background", "thing"]


def plan_for(object_pct: float, image=(1024, 1280), count=20, **rules):
    """A plan for `count` images where every object is `object_pct` % of the long side across."""
    sizes = [image] * count
    objects = {1: [object_pct / 100] * 50}
    settings = {"min_object_px": 12, "max_crop": 512, **rules}
    return plan_scale(sizes, objects, NAMES, "auto", background=[0], **settings)


def test_tiny_objects_get_a_larger_working_resolution_than_large_ones():
    tiny, large = plan_for(0.5), plan_for(30)
    assert tiny.long_side == 1280 and tiny.limited_by == "median image"  # 12 px needs 2400: capped
    assert large.long_side < tiny.long_side and large.long_side >= MIN_LONG_SIDE
    assert large.long_side == MIN_LONG_SIDE and large.limited_by == "context"  # 30% objects survive any size


def two_sizes(large_pct: float, count: int = 20, image=(1024, 1280)) -> Plan:
    """A plan for `count` images with people 1% of the long side across (L = 1200 keeps them
    12 px) and a class of `large_pct` % objects; background's gaps (90%) left out."""
    objects = {0: [0.9] * 10, 1: [0.01] * 50, 2: [large_pct / 100] * 50}
    return plan_scale([image] * count, objects, [*NAMES, "big"], "auto", 12, 512, background=[0])


def test_the_crop_does_not_shrink_with_the_number_of_images():
    crops = {count: two_sizes(20, count=count).crop for count in (7, 70, 700, 7000)}
    assert two_sizes(20).long_side == 1200
    assert set(map(tuple, crops.values())) == {(320, 320)}  # 1.25 x 20% x 1200 = 300, up to 32


def test_the_crop_holds_the_largest_objects_with_context_within_its_bounds():
    assert two_sizes(2).crop == (MIN_CROP, MIN_CROP)  # 1.25 x 24 px: the smallest crop still
    assert two_sizes(60).crop == (512, 512)  # 900 px: max_crop
    assert plan_for(30).crop == (128, 128)  # L 128: the crop never exceeds the image


def test_the_plan_does_not_depend_on_the_order_of_images_or_objects():
    rng = np.random.default_rng(0)
    sizes = [(int(h), int(w)) for h, w in rng.integers(300, 3000, size=(25, 2))]
    objects = {1: list(rng.uniform(0.005, 0.4, 60)), 2: list(rng.uniform(0.01, 0.2, 30))}
    names = [*NAMES, "big"]
    plan = plan_scale(sizes, objects, names, "auto", 12, 512, background=[0])
    shuffled_sizes = [sizes[i] for i in rng.permutation(len(sizes))]
    shuffled_objects = {k: list(rng.permutation(v)) for k, v in reversed(objects.items())}
    assert plan_scale(shuffled_sizes, shuffled_objects, names, "auto", 12, 512, background=[0]) == plan
    assert plan_scale(sizes[:-5], objects, names, "auto", 12, 512, background=[0]) != plan  # the data does count


def test_a_fixed_size_is_a_letterbox_without_padding():
    plan = plan_scale([(240, 320)] * 4, {1: [0.1]}, NAMES, 128, 12, 512)
    assert plan.mode == "fixed" and plan.long_side == 128 and plan.crop == plan.tile == (128, 128)


def test_object_sizes_measure_thickness():
    mask = np.zeros((100, 100), np.uint8)
    mask[10:15, 0:100] = 1  # a river 5 px wide
    mask[40:60, 40:60] = 1  # a 20 px square
    sizes = sorted(object_sizes(mask, 2)[1])
    assert sizes == [5.0, 20.0]
    mask[90, 90] = 1  # a one-pixel fragment: counted, not measured
    assert np.isnan(object_sizes(mask, 2, min_area=72)[1]).sum() == 1
