import json
from dataclasses import replace

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from segflow.data.draw import DrawRules, hidden_regions
from segflow.data.rasterize import draw_rules, rasterize, rasterize_image
from segflow.data.records import ImageAnnotation, Region

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


def test_a_via_rect_dragged_up_and_left_is_the_same_rect_and_stays_when_partly_outside():
    from segflow.data.readers.via_regions import via_region

    def rect(x, y, width, height):
        shape = {"name": "rect", "x": x, "y": y, "width": width, "height": height}
        return via_region(shape, {"label": "sky"}, "label", "row 2", "a.csv:2")

    dragged = rect(8, 6, -7, -4)  # from (8, 6) up and left: x 1..7, y 2..5
    assert dragged.geometry == rect(1, 2, 7, 4).geometry
    assert (paint(dragged) == 1).sum() == 28
    # Dragged from a corner past the right edge back into the 30x20 image: partly inside, kept.
    partly = rect(40, 5, -20, 3)
    x0, _, x1, _ = partly.bounds()
    assert (x0, x1) == (20, 39) and (paint(partly) == 1).sum() == 10 * 3


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
    from segflow.data.fetch import fetch

    params = make_params(fetch={"source": str(via_dataset)})
    fetch(params, tmp_path / "fetch")
    pixels = rasterize(params, tmp_path / "fetch", tmp_path / "masks")
    mask_a = cv2.imread(str(tmp_path / "masks" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert mask_a.shape == (30, 40) and mask_a.dtype == np.uint8
    sky, car = params.classes.names.index("sky"), params.classes.names.index("car")
    assert (mask_a == sky).sum() == 400 and (mask_a == car).sum() == 121
    assert pixels["sky"] == 400 and pixels["car"] == 121
    assert sum(pixels.values()) == 2 * 40 * 30


# --- pixel rules, lines and points, masks, ignore -------------------------------------


def paint_with(rules, *regions, size=(20, 30)):
    return rasterize_image(ImageAnnotation("x.jpg", tuple(regions)), *size, NAMES, 0, rules=rules)


def test_pil_rule_includes_both_rect_corners_and_fills_polygons_like_imagedraw():
    from PIL import Image, ImageDraw

    rect = Region("sky", "rect", geometry={"x": 1, "y": 2, "width": 7, "height": 4})
    assert (paint_with(DrawRules(fill="pil"), rect) == 1).sum() == 8 * 5  # labelme: corners inclusive
    triangle = Region("car", "polygon", points=((2.4, 1.6), (25.5, 4.0), (9.0, 18.7)))
    reference = Image.new("L", (30, 20), 0)
    ImageDraw.Draw(reference).polygon(list(triangle.points), fill=2)
    assert np.array_equal(paint_with(DrawRules(fill="pil"), triangle), np.asarray(reference))
    # the two rules differ only along the boundary
    differ = (paint_with(DrawRules(fill="opencv"), triangle) != np.asarray(reference)).sum()
    assert 0 < differ < 40


def test_polylines_and_points_drawn_only_with_a_width():
    line = Region("car", "polyline", points=((0, 10), (29, 10)))
    point = Region("sky", "point", points=((15, 5),))
    assert paint_with(DrawRules(), line, point).max() == 0
    for fill in ("opencv", "pil"):
        mask = paint_with(DrawRules(fill=fill, polyline_width=3, point_radius=2), line, point)
        assert (mask == 2).sum() == 3 * 30 and set(np.nonzero(mask == 2)[0]) == {9, 10, 11}
        assert 9 <= (mask == 1).sum() <= 25  # a disc of radius 2


def test_mask_regions_and_ignore_label():
    bitmap = np.zeros((20, 30), np.uint8, order="F")
    bitmap[5:8, 10:20] = 1
    rle = coco_mask.encode(bitmap)
    region = Region("car", "mask", geometry={"counts": rle["counts"].decode(), "size": [20, 30]})
    ignored = Region("ignore", "rect", geometry={"x": 0, "y": 0, "width": 2, "height": 2})
    mask = rasterize_image(ImageAnnotation("x.jpg", (region, ignored)), 20, 30, NAMES, 0, ignore_index=250)
    assert np.array_equal(mask == 2, bitmap == 1) and (mask == 250).sum() == 4


def test_auto_fill_follows_the_tool(make_params):
    params = make_params(rasterize={"polyline_width": 4})
    assert draw_rules(params, "cityscapes") == DrawRules(fill="pil", polyline_width=4)
    assert draw_rules(params, "labelme").fill == "pil" and draw_rules(params, "coco").fill == "opencv"
    assert draw_rules(make_params(rasterize={"fill": "opencv"}), "labelme").fill == "opencv"


def test_outline_polylines_are_filled_when_their_ends_meet():
    from segflow.data.draw import is_outline

    square = ((2, 3), (11, 3), (11, 12), (2, 12))
    closed = Region("car", "polyline", points=(*square, (2, 3)))
    near = Region("car", "polyline", points=(*square, (2, 5)))  # ends 2 px apart (< 3 px)
    # a long outline whose ends are 12 px apart: more than 3 px, but under 5% of its 400 px length
    big = ((0, 0), (100, 0), (100, 100), (0, 100), (0, 12))
    far = Region("car", "polyline", points=((2, 3), (11, 3), (11, 12), (2, 9)))  # a U: ends 6 px, 5% of 24 px
    line = Region("car", "polyline", points=((0, 10), (29, 10)))
    assert [is_outline(r) for r in (closed, near, far, line)] == [True, True, False, False]
    assert is_outline(Region("car", "polyline", points=big))
    for fill in ("opencv", "pil"):
        for outline in (closed, near):
            assert (paint_with(DrawRules(fill=fill), outline) == 2).sum() == 100  # as the square polygon
            assert paint_with(DrawRules(fill=fill, fill_outlines=False), outline).max() == 0  # skipped, as before
        assert paint_with(DrawRules(fill=fill), far, line).max() == 0  # lines stay lines


def test_open_polyline_not_drawn_says_why(tmp_path, make_params, via_dataset):
    from helpers import via_row

    from segflow.data.fetch import fetch

    csv = via_dataset / "via_region_data.csv"
    u_shape = '{"name":"polyline","all_points_x":[2,11,11,2],"all_points_y":[3,3,12,9]}'
    csv.write_text(csv.read_text() + via_row("b.jpg", 1, 1, u_shape, '{"label":"road"}') + "\n")
    params = make_params(fetch={"source": str(via_dataset)})
    fetch(params, tmp_path / "fetch")
    rasterize(params, tmp_path / "fetch", tmp_path / "masks", report_dir=tmp_path / "report")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    [message] = report["dropped"]["examples"]["polyline not drawn"]
    assert "via_region_data.csv row 5" in message and "its ends do not meet" in message
    assert "rasterize.polyline_width" in message


def test_order_area_keeps_a_small_shape_inside_a_big_one_visible(make_params):
    small = Region("car", "rect", geometry={"x": 5, "y": 5, "width": 4, "height": 4})
    big = Region("sky", "polygon", points=((0, 0), (29, 0), (29, 19), (0, 19)))
    assert (paint_with(DrawRules(), small, big) == 2).sum() == 0  # file order: the big one covers it
    for fill in ("opencv", "pil"):
        mask = paint_with(DrawRules(fill=fill, order="area"), small, big)
        small_pixels = {"opencv": 16, "pil": 25}[fill]  # PIL's rect includes both corners
        assert (mask == 2).sum() == small_pixels and (mask == 1).sum() == 600 - small_pixels
    assert draw_rules(make_params(rasterize={"order": "area"}), "via_csv").order == "area"


# --- regions wholly hidden by later ones ----------------------------------------------


def _hidden(image, rules, size=(20, 40)):
    mask = rasterize_image(image, *size, NAMES, 0, rules=rules)
    return [region.origin for region in hidden_regions(image, mask, NAMES, rules=rules)]


def test_hidden_regions_are_those_whose_class_shows_on_none_of_their_pixels():
    small = Region("car", "rect", geometry={"x": 5, "y": 5, "width": 4, "height": 4}, origin="small")
    half = Region("car", "rect", geometry={"x": 25, "y": 5, "width": 10, "height": 4}, origin="half out")
    big = Region("sky", "polygon", points=((0, 0), (29, 0), (29, 19), (0, 19)), origin="big")
    ring = Region("car", "mask", geometry=_rle_square(20, 40, 2, 2, 3), origin="mask")
    image = ImageAnnotation("x.jpg", (small, half, ring, big))
    for fill in ("opencv", "pil"):
        assert _hidden(image, DrawRules(fill=fill)) == ["small", "mask"], fill  # "half out" keeps 10 columns
        assert _hidden(image, DrawRules(fill=fill, order="area")) == []
    # An explicit layer (CVAT z_order) outranks area: the big shape on a higher layer hides the small one.
    layered = ImageAnnotation("x.jpg", (replace(small, z=0), replace(big, z=1)))
    assert _hidden(layered, DrawRules(order="area")) == ["small"]
    # Under a copy of itself a region loses no pixel of its class: not hidden (the VIA reader
    # warns about exact repeats); nor is a sliver that paints no pixel even alone.
    assert _hidden(ImageAnnotation("x.jpg", (small, replace(small, origin="copy"))), DrawRules()) == []
    sliver = Region("car", "polygon", points=((40.2, 5.2), (40.4, 5.2), (40.3, 5.4)), origin="sliver")
    assert _hidden(ImageAnnotation("x.jpg", (sliver, big)), DrawRules()) == []


def _rle_square(height, width, x, y, side):
    square = np.zeros((height, width), np.uint8, order="F")
    square[y : y + side, x : x + side] = 1
    rle = coco_mask.encode(square)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def test_report_counts_hidden_regions_apart_and_warns_with_the_fix(via_dataset, make_params, tmp_path, caplog):
    from helpers import via_row

    from segflow.data.fetch import fetch

    csv = via_dataset / "via_region_data.csv"
    rows = [  # on b.jpg: a car listed before the sky rect that covers it, then a car on top
        via_row("b.jpg", 3, 1, '{"name":"rect","x":2,"y":2,"width":5,"height":5}', '{"label":"car"}'),
        via_row("b.jpg", 3, 2, '{"name":"rect","x":0,"y":0,"width":40,"height":20}', '{"label":"sky"}'),
        via_row("b.jpg", 3, 3, '{"name":"rect","x":20,"y":2,"width":5,"height":5}', '{"label":"person"}'),
    ]
    csv.write_text(csv.read_text() + "\n".join(rows) + "\n")
    params = make_params(fetch={"source": str(via_dataset)})
    fetch(params, tmp_path / "fetch")
    fetched = json.loads((tmp_path / "fetch" / "report.json").read_text())["classes"]
    rasterize(params, tmp_path / "fetch", tmp_path / "masks", report_dir=tmp_path / "report")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert fetched["car"] == {"images": 2, "instances": 2}
    assert {k: report["classes"]["car"][k] for k in ("images", "instances", "hidden")} == {
        "images": 1,
        "instances": 1,
        "hidden": 1,
    }
    assert report["classes"]["sky"]["hidden"] == 0 and report["classes"]["person"]["instances"] == 2
    assert report["hidden_regions"] == {"counts": {"car": 1}, "examples": {"car": ["via_region_data.csv row 5"]}}
    warning = " ".join(caplog.text.split())
    assert "1 regions of class 'car' are wholly hidden (their class on none of their pixels)" in warning
    assert "via_region_data.csv row 5" in warning and "set rasterize.order: area" in warning
    area = make_params(fetch={"source": str(via_dataset)}, rasterize={"order": "area"})
    rasterize(area, tmp_path / "fetch", tmp_path / "masks_area", report_dir=tmp_path / "report_area")
    report = json.loads((tmp_path / "report_area" / "report.json").read_text())
    assert report["hidden_regions"]["counts"] == {} and report["classes"]["car"]["instances"] == 2
