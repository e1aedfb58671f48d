"""Painting one synthetic street scene for the embedded sample (see `sample`).

Sky, a row of buildings, a road in perspective, cars and people; each annotated object
is painted from the very integer vertices its region carries, so masks rasterized from
the regions agree with the picture. Sidewalk, curb, grass and hedges get no region.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["draw_scene"]

#: Facade colours (BGR): brick, sandstone, concrete, blue glass, cream, brown, ochre.
_FACADES = np.array(
    [[60, 70, 150], [140, 180, 200], [150, 150, 145], [150, 115, 80], [190, 215, 225], [60, 85, 110], [70, 150, 200]],
    dtype=np.float32,
)
_GLASS = 3  # index of the glass facade in _FACADES: it gets large windows
#: Sky (top colour, horizon colour) pairs, BGR: clear, overcast, dusk.
_SKIES = np.array(
    [[[170, 110, 50], [235, 215, 190]], [[165, 160, 155], [215, 210, 205]], [[140, 90, 90], [130, 180, 240]]],
    dtype=np.float32,
)
#: Width of one lane in metres: sets the pixels-per-metre scale of cars and people.
_LANE_M = 3.5


@dataclass(frozen=True)
class _Region:
    """One annotated region: integer vertices (N, 2) as x, y; `rect` writes a VIA rect."""

    label: str
    points: np.ndarray
    rect: bool = False

    def shape_json(self) -> str:
        xs, ys = self.points[:, 0], self.points[:, 1]
        if self.rect:  # VIA's rect covers x .. x+width-1 once rasterized
            shape = {
                "name": "rect",
                "x": int(xs.min()),
                "y": int(ys.min()),
                "width": int(xs.max() - xs.min() + 1),
                "height": int(ys.max() - ys.min() + 1),
            }
        else:
            shape = {"name": "polygon", "all_points_x": xs.tolist(), "all_points_y": ys.tolist()}
        return json.dumps(shape, separators=(",", ":"))


def _poly(xy: list[tuple[float, float]]) -> np.ndarray:
    """Round float vertices to pixels, dropping repeats that rounding creates."""
    pts = np.round(np.asarray(xy, dtype=np.float64)).astype(np.int32)
    keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)
    return pts[keep]


def _mask(points: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [points], 1)
    return mask.astype(bool)


def _textured(rng: np.random.Generator, shape: tuple[int, ...], colour: np.ndarray, grain: float) -> np.ndarray:
    """A full-size layer of `colour` with luminance grain, to paint through a mask."""
    return colour + rng.normal(0.0, grain, (*shape[:2], 1)).astype(np.float32)


class _Road:
    """Road geometry: straight edges from the horizon to the bottom row, in perspective."""

    def __init__(self, rng: np.random.Generator, h: int, w: int, y_h: int) -> None:
        self.h, self.w, self.y_h = h, w, y_h
        top = w * rng.uniform(0.35, 0.65)  # centre columns of the top and bottom edges
        bottom = top + w * rng.uniform(-0.25, 0.25)
        half_top, half_bottom = w * rng.uniform(0.12, 0.25), w * rng.uniform(0.5, 0.8)
        self.left = (top - half_top, bottom - half_bottom)
        self.right = (top + half_top, bottom + half_bottom)
        self.lanes = int(rng.integers(2, 5))

    def x(self, f: float, y: float) -> float:
        """Column at fraction `f` across the road (0 left edge, 1 right edge) on row `y`."""
        t = (y - self.y_h) / (self.h - 1 - self.y_h)
        xl = self.left[0] + t * (self.left[1] - self.left[0])
        xr = self.right[0] + t * (self.right[1] - self.right[0])
        return xl + f * (xr - xl)

    def ppm(self, y: float) -> float:
        """Pixels per metre on row `y`, from the road's width in lanes."""
        return (self.x(1.0, y) - self.x(0.0, y)) / (self.lanes * _LANE_M)

    def band(self, f0: float, f1: float, y0: float, y1: float) -> np.ndarray:
        """Quad between road fractions `f0`, `f1` and rows `y0`, `y1` (may leave the image)."""
        return _poly([(self.x(f0, y0), y0), (self.x(f1, y0), y0), (self.x(f1, y1), y1), (self.x(f0, y1), y1)])

    def outline(self) -> np.ndarray:
        """The road polygon clipped to the image columns (Sutherland-Hodgman)."""
        y0, y1 = float(self.y_h), float(self.h - 1)
        pts = [(self.x(0, y0), y0), (self.x(1, y0), y0), (self.x(1, y1), y1), (self.x(0, y1), y1)]
        for inside, bound in ((lambda x: x >= 0, 0.0), (lambda x: x <= self.w - 1, self.w - 1.0)):
            clipped = []
            for (px, py), (qx, qy) in zip(pts[-1:] + pts[:-1], pts):
                if inside(px) != inside(qx):
                    clipped.append((bound, py + (qy - py) * (bound - px) / (qx - px)))
                if inside(qx):
                    clipped.append((qx, qy))
            pts = clipped
        return _poly(pts)


def _sky(rng: np.random.Generator, h: int, w: int, y_h: int) -> np.ndarray:
    """The base layer: a vertical sky gradient with soft clouds, (h, w, 3) float32."""
    top, horizon = _SKIES[rng.integers(len(_SKIES))] + rng.normal(0, 12, (2, 3))
    t = np.clip(np.arange(h, dtype=np.float32) / y_h, 0, 1)[:, None, None] ** 0.8
    img = (top * (1 - t) + horizon * t) * np.ones((1, w, 1), np.float32)
    alpha = np.zeros((h, w), np.float32)
    for _ in range(rng.integers(0, 6)):
        cx, cy, size = rng.uniform(0, w), rng.uniform(0, 0.6 * y_h), rng.uniform(0.04, 0.1) * w
        for _ in range(rng.integers(3, 7)):  # a cloud is a cluster of puffs
            centre = (int(cx + rng.normal(0, size)), int(cy + rng.normal(0, size / 3)))
            axes = (int(size * rng.uniform(0.6, 1.2)), int(size * rng.uniform(0.3, 0.6)))
            cv2.ellipse(alpha, centre, axes, 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.02 * w + 1)[..., None] * rng.uniform(0.5, 0.9)
    return img * (1 - alpha) + rng.uniform(200, 250) * alpha


def _ground(rng: np.random.Generator, img: np.ndarray, road: _Road) -> None:
    """Paint the unannotated ground: paving with joints, grass strips and curbs."""
    h, y_h = road.h, road.y_h
    paving = rng.uniform(110, 190) + rng.normal(0, 10, 3)
    img[y_h:] = _textured(rng, img.shape, paving, 5)[y_h:]
    y = float(y_h)
    while y < h:  # joints between paving slabs, spaced in perspective
        img[int(y)] *= 0.8
        y += max(2.0, 0.5 * road.ppm(y))
    if rng.random() < 0.6:
        grass = _textured(rng, img.shape, np.array([60, 130, 80]) + rng.normal(0, 12, 3), 12)
        for f0, f1 in ((-0.4, -0.12), (1.12, 1.4)):
            strip = _mask(road.band(f0, f1, y_h, h - 1), img.shape)
            img[strip] = grass[strip]
    for f0, f1 in ((-0.04, 0.0), (1.0, 1.04)):
        cv2.fillPoly(img, [road.band(f0, f1, y_h, h - 1)], (175, 175, 170))


def _buildings(rng: np.random.Generator, img: np.ndarray, y_h: int, haze: np.ndarray) -> list[_Region]:
    """Paint two rows of buildings on the horizon, the far row hazy; return their regions."""
    h, w = img.shape[:2]
    regions = []
    for far in (True, False):
        x = -rng.uniform(0, 0.1) * w
        while x < w:
            width = w * rng.uniform(0.12, 0.3)
            x0, x1 = max(0, round(x)), min(w - 1, round(x + width) - 1)
            x += width + (rng.uniform(0.03, 0.1) * w if rng.random() < 0.2 else 0.0)
            if x1 - x0 < 4 or (far and rng.random() < 0.4):  # the far row is sparse
                continue
            top = rng.uniform(0.05 * h if far else 0.15 * h, y_h - (0.2 if far else 0.08) * h)
            regions.append(_building(rng, img, (x0, x1, top, y_h + rng.integers(0, 3)), far, haze))
    return regions


def _building(
    rng: np.random.Generator, img: np.ndarray, box: tuple[int, int, float, int], far: bool, haze: np.ndarray
) -> _Region:
    """Paint one facade in `box` (x0, x1 inclusive, roof top, base row) with windows."""
    x0, x1, top, base = box
    roof = min(rng.uniform(0.04, 0.12) * img.shape[0], 0.4 * (base - top))
    kind = rng.choice(5, p=[0.2, 0.35, 0.15, 0.15, 0.15])  # rect, flat, gable, slant, setback
    if kind <= 1:
        outline = [(x0, top), (x1, top), (x1, base), (x0, base)]
    elif kind == 2:
        outline = [(x0, base), (x0, top + roof), ((x0 + x1) / 2, top), (x1, top + roof), (x1, base)]
    elif kind == 3:
        left, right = (top, top + roof) if rng.random() < 0.5 else (top + roof, top)
        outline = [(x0, base), (x0, left), (x1, right), (x1, base)]
    else:
        s, t = rng.uniform(0.1, 0.25) * (x1 - x0), top + roof
        outline = [(x0, base), (x0, t), (x0 + s, t), (x0 + s, top), (x1 - s, top), (x1 - s, t), (x1, t), (x1, base)]
    points = _poly(outline)
    facade = int(rng.integers(len(_FACADES)))
    colour = _FACADES[facade] + rng.normal(0, 12, 3)
    glass = np.array([70.0, 60, 50]) + rng.normal(0, 10, 3) if rng.random() < 0.7 else 0.75 * haze
    if far:  # atmospheric perspective: distant things fade towards the horizon colour
        colour, glass = 0.55 * colour + 0.45 * haze, 0.6 * glass + 0.4 * haze
    layer = _textured(rng, img.shape, colour, 4)
    cell_h = max(3.0, img.shape[0] * rng.uniform(0.04, 0.07) * (0.7 if far else 1.0))
    cell_w = cell_h * rng.uniform(0.8, 1.5)
    fill = 0.85 if facade == _GLASS else rng.uniform(0.45, 0.7)
    cols = int((x1 - x0) // cell_w)
    xs = x0 + ((x1 - x0) - cols * cell_w) / 2 + cell_w * np.arange(cols)
    ys = np.arange(top + roof + 0.5 * cell_h, base - 1.5 * cell_h, cell_h)
    shades = glass + rng.normal(0, 12, (len(ys), cols, 1))
    shades[rng.random((len(ys), cols)) < 0.08] = (110, 190, 235)  # a few lit windows
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            corner = (int(x + cell_w * (1 - fill) / 2), int(y))
            opposite = (int(x + cell_w * (1 + fill) / 2), int(y + cell_h * fill))
            cv2.rectangle(layer, corner, opposite, shades[i, j].tolist(), -1)
    if rng.random() < 0.5:  # a dark shopfront along the ground floor
        layer[int(base - 1.2 * cell_h) :] *= 0.45
    inside = _mask(points, img.shape)
    img[inside] = layer[inside]
    return _Region("building", points, rect=bool(kind == 0))


def _sky_region(buildings: list[_Region], shape: tuple[int, ...], y_h: int) -> _Region:
    """The sky polygon: everything above the horizon that no building covers."""
    built = np.zeros(shape[:2], np.uint8)
    for region in buildings:
        cv2.fillPoly(built, [region.points], 1)
    open_sky = np.zeros(shape[:2], bool)
    open_sky[:y_h] = built[:y_h] == 0
    # Trace the skyline 2 px inside the buildings (which are painted over the sky) and
    # 2 px beyond the image's top and sides, so the simplified outline has room to cut
    # corners without leaving sky unannotated.
    shrunk = cv2.erode(built, np.ones((5, 5), np.uint8))
    shrunk[y_h - 3 :] = built[y_h - 3 :]
    traced = np.zeros_like(built)
    traced[:y_h] = 1 - shrunk[:y_h]
    traced = cv2.copyMakeBorder(traced, 2, 0, 2, 2, cv2.BORDER_REPLICATE)
    contours, _ = cv2.findContours(traced, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    exact = max(contours, key=cv2.contourArea)
    for outline in (cv2.approxPolyDP(exact, 1.0, True), exact):
        points = _poly(np.clip(outline.reshape(-1, 2) - 2, 0, (shape[1] - 1, shape[0] - 1)))
        if not np.any(open_sky & ~_mask(points, shape)):  # rare: a cut corner in a narrow gap
            break
    return _Region("sky", points)


def _draw_road(rng: np.random.Generator, img: np.ndarray, road: _Road) -> _Region:
    """Paint asphalt with lane markings (part of the road class); return the road region."""
    h, w, y_h = road.h, road.w, road.y_h
    layer = np.full((h, w, 3), rng.uniform(60, 120) + rng.normal(0, 5, 3), np.float32)
    paint = (rng.uniform(190, 240),) * 3
    half = rng.uniform(0.006, 0.012)  # half a line's width, as a fraction of the road's
    for f in (0.03, 0.97):
        cv2.fillPoly(layer, [road.band(f - half, f + half, y_h, h - 1)], paint)
    for lane in range(1, road.lanes):
        f = lane / road.lanes
        if road.lanes == 2 and rng.random() < 0.5:  # a solid yellow centre line
            cv2.fillPoly(layer, [road.band(f - half, f + half, y_h, h - 1)], (60, 190, 230))
            continue
        y, on = float(y_h), bool(rng.random() < 0.5)
        while y < h - 1:  # dashes grow towards the camera, with the road's width
            end = min(h - 1.0, y + max(2.0, 0.15 * (road.x(1, y) - road.x(0, y))))
            if on:
                cv2.fillPoly(layer, [road.band(f - half, f + half, y, end)], paint)
            y, on = end, not on
    if rng.random() < 0.25:  # a zebra crossing about 3 m deep
        y0 = y_h + rng.uniform(0.3, 0.7) * (h - 1 - y_h)
        for f in np.arange(0.04, 0.96, 0.08):
            cv2.fillPoly(layer, [road.band(f, f + 0.04, y0, y0 + 1.5 * road.ppm(y0))], paint)
    blotches = cv2.resize(rng.normal(0, 8, (h // 16 + 2, w // 16 + 2)).astype(np.float32), (w, h))
    layer += rng.normal(0, 4, (h, w, 1)).astype(np.float32) + blotches[..., None]
    points = road.outline()
    inside = _mask(points, img.shape)
    img[inside] = layer[inside]
    return _Region("road", points)


def _shadow(img: np.ndarray, x: float, y: float, rx: float, ry: float) -> None:
    """Darken an elliptic patch of ground under an object standing at (x, y)."""
    patch = np.zeros(img.shape[:2], np.uint8)
    cv2.ellipse(patch, (int(x), int(y)), (max(1, int(rx)), max(1, int(ry))), 0, 0, 360, 1, -1)
    img[patch.astype(bool)] *= 0.55


def _car(rng: np.random.Generator, img: np.ndarray, road: _Road, yb: int, xc: float) -> _Region | None:
    """Paint a car seen from behind or ahead, wheels on row `yb`; None if it does not fit."""
    ppm = road.ppm(yb)
    cw, ch = ppm * rng.uniform(1.7, 2.0), ppm * rng.uniform(1.3, 1.9)
    x0 = xc - cw / 2
    if cw < 8 or x0 < 0 or x0 + cw > img.shape[1] - 1 or yb - ch < 0:
        return None
    b, ib, it = rng.uniform(0.45, 0.6), rng.uniform(0.03, 0.1), rng.uniform(0.14, 0.24)

    def box(fx0: float, fy0: float, fx1: float, fy1: float) -> np.ndarray:
        return _poly(
            [
                (x0 + fx0 * cw, yb - fy0 * ch),
                (x0 + fx1 * cw, yb - fy0 * ch),
                (x0 + fx1 * cw, yb - fy1 * ch),
                (x0 + fx0 * cw, yb - fy1 * ch),
            ]
        )

    outline = [
        (0.04, 0),
        (0.2, 0),
        (0.2, 0.1),
        (0.8, 0.1),
        (0.8, 0),
        (0.96, 0),
        (0.96, 0.1),
        (1, 0.12),
        (1, b),
        (1 - ib, b),
        (1 - it, 1),
        (it, 1),
        (ib, b),
        (0, b),
        (0, 0.12),
        (0.04, 0.1),
    ]
    points = _poly([(x0 + fx * cw, yb - fy * ch) for fx, fy in outline])
    paints = [(225, 225, 225), (35, 35, 35), (170, 170, 165), (40, 40, 180), (140, 70, 30)]
    body = np.array(paints[rng.integers(5)] if rng.random() < 0.7 else rng.uniform(30, 230, 3))
    layer = _textured(rng, img.shape, body + rng.normal(0, 8, 3), 4)
    window = _poly(
        [
            (x0 + f * cw, yb - g * ch)
            for f, g in ((ib + 0.06, b + 0.04), (1 - ib - 0.06, b + 0.04), (1 - it - 0.04, 0.93), (it + 0.04, 0.93))
        ]
    )
    cv2.fillPoly(layer, [window], (60, 55, 50))
    cv2.fillPoly(layer, [box(0, 0.1, 1, 0.22)], (0.45 * body + 20).tolist())  # bumper
    lamp = (40, 40, 210) if rng.random() < 0.7 else (220, 240, 250)  # tail or head lights
    for fx in (0.03, 0.8):
        cv2.fillPoly(layer, [box(fx, b - 0.17, fx + 0.17, b - 0.05)], lamp)
        cv2.fillPoly(layer, [box(fx + 0.01, 0, fx + 0.17, 0.12)], (25, 25, 25))  # wheel
    cv2.fillPoly(layer, [box(0.4, 0.24, 0.6, 0.34)], (220, 220, 215))  # number plate
    _shadow(img, xc, yb, 0.55 * cw, 0.06 * ch)
    inside = _mask(points, img.shape)
    img[inside] = layer[inside]
    return _Region("car", points)


def _person(rng: np.random.Generator, img: np.ndarray, road: _Road, yb: int, xc: float) -> _Region | None:
    """Paint a standing person, feet on row `yb`; None if it does not fit."""
    u = road.ppm(yb) * rng.uniform(1.55, 1.9)  # height in pixels
    if u < 10 or yb - u < 0 or xc - 0.3 * u < 0 or xc + 0.3 * u > img.shape[1] - 1:
        return None
    hw, st, r = rng.uniform(0.11, 0.15), rng.uniform(0, 0.08), 0.065  # shoulders, stride, head
    head = [(r * np.cos(a), 1 - r + r * np.sin(a)) for a in np.radians(np.arange(-60, 241, 50))]
    outline = [
        (-0.08 - st, 0),
        (-0.02 - st / 2, 0),
        (0, 0.45),
        (0.02 + st / 2, 0),
        (0.08 + st, 0),
        (0.09, 0.5),
        (hw - 0.03, 0.45),
        (hw + 0.01, 0.43),
        (hw, 0.78),
        (0.035, 0.84),
        *head,
        (-0.035, 0.84),
        (-hw, 0.78),
        (-hw - 0.01, 0.43),
        (-hw + 0.03, 0.45),
        (-0.09, 0.5),
    ]
    points = _poly([(xc + fx * u, yb - fy * u) for fx, fy in outline])
    rise = ((yb - np.arange(img.shape[0])) / u)[:, None]  # height above the feet, per row
    skin = np.array([(60, 90, 150), (90, 140, 200), (120, 170, 225)][rng.integers(3)])
    colour = np.where(rise > 0.48, rng.uniform(20, 235, 3), rng.uniform(20, 140, 3))
    colour = np.where(rise > 0.845, skin, colour)
    colour = np.where((rise > 1 - 0.8 * r) | (rise < 0.03), rng.uniform(15, 60), colour)  # hair, shoes
    layer = colour[:, None, :].astype(np.float32) + rng.normal(0, 5, (*img.shape[:2], 1))
    _shadow(img, xc, yb, 0.15 * u, 0.03 * u)
    inside = _mask(points, img.shape)
    img[inside] = layer[inside]
    return _Region("person", points)


def _hedges(rng: np.random.Generator, img: np.ndarray, road: _Road, free: np.ndarray) -> None:
    """Paint a few bushes on the ground, only where no region lies (they stay background)."""
    bush = np.zeros(img.shape[:2], np.uint8)
    for _ in range(rng.integers(0, 4)):
        y = rng.uniform(road.y_h, road.h - 1)
        x, size = rng.uniform(0, road.w), road.ppm(y) * rng.uniform(0.8, 2.0)
        for _ in range(4):
            centre = (int(x + rng.normal(0, size / 2)), int(y - rng.uniform(0, size / 2)))
            cv2.ellipse(bush, centre, (int(size / 2) + 1, int(size / 3) + 1), 0, 0, 360, 1, -1)
    leaves = _textured(rng, img.shape, np.array([40, 100, 50]) + rng.normal(0, 10, 3), 22)
    inside = bush.astype(bool) & free
    img[inside] = leaves[inside]


def draw_scene(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, list[_Region]]:
    """One street scene: the (h, w, 3) uint8 BGR image and its regions, back to front."""
    y_h = int(h * rng.uniform(0.38, 0.5))  # horizon row, where buildings and road begin
    img = _sky(rng, h, w, y_h)
    haze = img[y_h - 1].mean(axis=0)
    road = _Road(rng, h, w, y_h)
    _ground(rng, img, road)
    buildings = _buildings(rng, img, y_h, haze)
    regions = [_sky_region(buildings, img.shape, y_h), *buildings, _draw_road(rng, img, road)]
    placed = []
    for kind in ("car", "person"):
        for _ in range(rng.integers(0, 4)):
            # People keep to the nearer 65% of the ground: farther off, shrunk to the
            # 128 px training size, they would be thinner than a pixel.
            yb = round(y_h + (h - 1 - y_h) * rng.uniform(0.15 if kind == "car" else 0.35, 1.0))
            lane = (rng.integers(road.lanes) + 0.5 + rng.normal(0, 0.1)) / road.lanes
            placed.append((yb, kind, road.x(lane, yb) if kind == "car" else rng.uniform(0, w)))
    for yb, kind, xc in sorted(placed):  # nearer objects (lower in the image) are painted last
        region = (_car if kind == "car" else _person)(rng, img, road, yb, xc)
        regions += [region] if region is not None else []
    painted = np.zeros((h, w), np.uint8)
    for region in regions:
        cv2.fillPoly(painted, [region.points], 1)
    _hedges(rng, img, road, painted == 0)
    contrast, gain = rng.uniform(0.8, 1.2), rng.uniform(0.75, 1.15) * rng.uniform(0.92, 1.08, 3)
    img = ((img - 128) * contrast + 128) * gain + rng.normal(0, rng.uniform(1, 3), img.shape)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.8, 1.2))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), regions
