import cv2
import numpy as np

from segflow.rasterize import rasterize, rasterize_image
from segflow.records import ImageAnnotation, Region

NAMES = ["background", "sky", "car"]


def paint(*regions, unlabeled=0, size=(20, 30)):
    return rasterize_image(ImageAnnotation("x.jpg", tuple(regions)), *size, NAMES, unlabeled)


def test_square_polygon_fills_its_boundary_pixels():
    square = Region("car", "polygon", points=((2, 3), (11, 3), (11, 12), (2, 12)))
    mask = paint(square)
    # vertices 2..11 inclusive in x and 3..12 in y: a 10 x 10 block
    assert (mask == 2).sum() == 100
    assert mask[3:13, 2:12].min() == 2


def test_rect_covers_width_times_height_pixels():
    mask = paint(Region("sky", "rect", geometry={"x": 1, "y": 2, "width": 7, "height": 4}))
    assert (mask == 1).sum() == 28
    assert mask[2:6, 1:8].min() == 1


def test_later_region_paints_over_earlier():
    sky = Region("sky", "rect", geometry={"x": 0, "y": 0, "width": 30, "height": 20})
    car = Region("car", "rect", geometry={"x": 0, "y": 0, "width": 10, "height": 10})
    mask = paint(sky, car)
    assert (mask == 2).sum() == 100 and (mask == 1).sum() == 600 - 100
    assert (paint(car, sky) == 2).sum() == 0


def test_unlabeled_pixels_take_the_unlabeled_value():
    mask = paint(Region("car", "rect", geometry={"x": 0, "y": 0, "width": 5, "height": 5}), unlabeled=255)
    assert (mask == 255).sum() == 600 - 25


def test_circle_and_ellipse_areas_lie_between_inner_and_outer_radius():
    # Boundary pixels count as inside (as for polygons), so the area is a little
    # more than pi * r^2 but less than pi * (r + 1)^2.
    circle = (paint(Region("car", "circle", geometry={"cx": 15, "cy": 10, "r": 6}), size=(40, 40)) == 2).sum()
    assert np.pi * 6**2 < circle < np.pi * 7**2
    ellipse = Region("car", "ellipse", geometry={"cx": 20, "cy": 20, "rx": 12, "ry": 5, "theta": np.pi / 2})
    mask = paint(ellipse, size=(40, 40))
    assert np.pi * 12 * 5 < (mask == 2).sum() < np.pi * 13 * 6
    # rotated by 90 degrees: taller than wide
    ys, xs = np.nonzero(mask == 2)
    assert np.ptp(ys) > np.ptp(xs)


def test_polygon_outside_the_image_is_clipped():
    mask = paint(Region("car", "polygon", points=((-10, -10), (5, -10), (5, 4), (-10, 4))))
    assert (mask == 2).sum() == 6 * 5


def test_stage_writes_one_png_per_image(via_dataset, make_params, tmp_path):
    from segflow.fetch import fetch

    params = make_params(fetch={"source": str(via_dataset)})
    fetch(params, tmp_path / "fetch")
    pixels = rasterize(params, tmp_path / "fetch", tmp_path / "masks")
    mask_a = cv2.imread(str(tmp_path / "masks" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert mask_a.shape == (30, 40) and mask_a.dtype == np.uint8
    sky, car = params.classes.names.index("sky"), params.classes.names.index("car")
    assert (mask_a == sky).sum() == 400 and (mask_a == car).sum() == 121
    assert pixels["sky"] == 400 and pixels["car"] == 121
    assert sum(pixels.values()) == 2 * 40 * 30
