"""Make this folder's Label Studio export with Label Studio itself (see NOTE.md).

Run with the Python of a separate venv holding label-studio (never segflow's), while
`label-studio start` serves on 127.0.0.1:8093 with the user token below:

    python make_export.py OUT_FOLDER

It draws three 160x120 PNGs, creates a project whose labeling config has polygon,
rectangle, ellipse and brush labels, uploads the images, annotates them through the
API (brush masks RLE-encoded by label_studio_sdk.converter.brush.mask2rle) and writes
the JSON export of the project, as Label Studio's export API returns it.
"""

import json
import sys
from pathlib import Path

import numpy as np
import requests
from label_studio_sdk.converter.brush import mask2rle
from PIL import Image

URL = "http://127.0.0.1:8093"
USER, PASSWORD = "tester@example.com", "segflowtest123"
W, H = 160, 120
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <PolygonLabels name="poly" toName="image"><Label value="car"/><Label value="person"/></PolygonLabels>
  <RectangleLabels name="rect" toName="image"><Label value="sign"/><Label value="road"/></RectangleLabels>
  <EllipseLabels name="ellipse" toName="image"><Label value="ball"/></EllipseLabels>
  <BrushLabels name="brush" toName="image"><Label value="grass"/></BrushLabels>
</View>"""


def pct(x: float, y: float) -> list[float]:
    return [x / W * 100, y / H * 100]


def result(name: str, kind: str, value: dict, number: int) -> dict:
    common = {"original_width": W, "original_height": H, "image_rotation": 0}
    return {"id": f"r{number}", "from_name": name, "to_name": "image", "type": kind, "value": value, **common}


def brush_mask() -> np.ndarray:
    """A 20x50 block (rows 90..109, columns 10..59) and a disc of radius 8 at (120, 100)."""
    mask = np.zeros((H, W), np.uint8)
    mask[90:110, 10:60] = 255
    yy, xx = np.mgrid[:H, :W]
    mask[(xx - 120) ** 2 + (yy - 100) ** 2 <= 64] = 255
    return mask


def annotations() -> dict[str, list[dict]]:
    a = [
        result(
            "poly", "polygonlabels", {"points": [pct(10, 10), pct(70, 10), pct(10, 70)], "polygonlabels": ["car"]}, 1
        ),
        result(
            "rect",
            "rectanglelabels",
            {"x": 62.5, "y": 100 / 12, "width": 25, "height": 25, "rotation": 0, "rectanglelabels": ["sign"]},
            2,
        ),
        # Rotated 30 degrees clockwise about its top-left corner (80, 60), as Label Studio rotates.
        result(
            "rect",
            "rectanglelabels",
            {"x": 50, "y": 50, "width": 25, "height": 100 / 6, "rotation": 30, "rectanglelabels": ["road"]},
            3,
        ),
    ]
    b = [
        result(
            "ellipse",
            "ellipselabels",
            {"x": 50, "y": 50, "radiusX": 18.75, "radiusY": 100 / 6, "rotation": 0, "ellipselabels": ["ball"]},
            4,
        ),
        result("brush", "brushlabels", {"format": "rle", "rle": mask2rle(brush_mask()), "brushlabels": ["grass"]}, 5),
    ]
    c = [
        result(
            "poly",
            "polygonlabels",
            {"points": [pct(40, 20), pct(120, 20), pct(120, 100), pct(40, 100)], "polygonlabels": ["person"]},
            6,
        )
    ]
    return {"a.png": a, "b.png": b, "c.png": c}


def login() -> requests.Session:
    """A session logged in through the login form, its CSRF token sent with each request."""
    session = requests.Session()
    session.get(f"{URL}/user/login/", timeout=60).raise_for_status()
    token = session.cookies["csrftoken"]
    form = {"email": USER, "password": PASSWORD, "csrfmiddlewaretoken": token}
    session.post(f"{URL}/user/login/", data=form, headers={"Referer": f"{URL}/user/login/"}, timeout=60)
    session.headers.update({"X-CSRFToken": session.cookies["csrftoken"], "Referer": URL})
    return session


def main(out: Path) -> None:
    http = login()
    out.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:H, :W]
    for shift, name in enumerate(("a.png", "b.png", "c.png")):  # three different smooth gradients
        rgb = np.stack([xx * 255 // W, yy * 255 // H, np.full_like(xx, 80 * shift)], axis=-1)
        Image.fromarray(rgb.astype(np.uint8)).save(out / name)
    project = http.post(f"{URL}/api/projects", json={"title": "segflow test", "label_config": CONFIG}, timeout=60)
    project.raise_for_status()
    pid = project.json()["id"]
    for name in ("a.png", "b.png", "c.png"):
        with (out / name).open("rb") as file:
            http.post(
                f"{URL}/api/projects/{pid}/import", files={name: (name, file, "image/png")}, timeout=60
            ).raise_for_status()
    tasks = http.get(f"{URL}/api/tasks", params={"project": pid}, timeout=60)
    tasks.raise_for_status()
    by_name = annotations()
    for task in tasks.json()["tasks"]:
        name = task["data"]["image"].rsplit("/", 1)[1].split("-", 1)[1]
        http.post(
            f"{URL}/api/tasks/{task['id']}/annotations", json={"result": by_name[name]}, timeout=60
        ).raise_for_status()
    export = http.get(f"{URL}/api/projects/{pid}/export", params={"exportType": "JSON"}, timeout=60)
    export.raise_for_status()
    (out / "export.json").write_text(json.dumps(export.json(), indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
