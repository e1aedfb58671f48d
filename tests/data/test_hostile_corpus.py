"""A fuzz corpus on every annotation reader: real exports from ../shared/datasets (and the
Label Studio export kept in tests/files), each mutated in fixed, seeded ways: truncated,
wrapped in deep nesting, re-encoded, values swapped for hostile ones (NaN, 1e400, strings,
nulls, lists, huge strings), XML entity bombs and external entities. Every case must end in
a correct read or a segflow error that names the file, within seconds: never another
exception (a traceback for the user), and nothing written beside the file.

A new mutation or format is one entry in MUTATIONS or SOURCES.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable

import pytest
from helpers import REPO_ROOT, SHARED_DATASETS

from segflow.data.drops import Drops
from segflow.data.readers import read_detected
from segflow.errors import SegflowError

#: name: (file, label_key). Small real exports, one per reader that reads a file.
SOURCES = {
    "via_json": (SHARED_DATASETS / "via-2label/HEAD/datasets/via/via_region_data.json", "label"),
    "via_csv": (SHARED_DATASETS / "via-2label/HEAD/datasets/via/via_region_data.csv", "label"),
    "coco": (SHARED_DATASETS / "via-2label/HEAD/datasets/coco1.0/annotations/instances_default.json", "label"),
    "labelme": (
        SHARED_DATASETS / "labelme-examples/examples/instance_segmentation/data_annotated/2011_000003.json",
        "",
    ),
    "cvat": (SHARED_DATASETS / "cvat-coins-polygons/data/annotations.xml", ""),
    "label_studio": (REPO_ROOT / "tests/files/label_studio/export.json", ""),
}

_NUMBER = re.compile(rb"(?<![\w.])-?\d+(\.\d+)?(?![\w.])")


def _swap_numbers(replacement: bytes, share: float = 0.3) -> Callable[[bytes, random.Random], bytes]:
    """Replace a seeded share of the number tokens with `replacement`."""

    def mutate(data: bytes, rng: random.Random) -> bytes:
        return _NUMBER.sub(lambda m: replacement if rng.random() < share else m.group(0), data)

    return mutate


def _json_nodes(replacement: object, share: float = 0.2) -> Callable[[bytes, random.Random], bytes]:
    """Parse JSON, replace a seeded share of its values (at any depth) with `replacement`."""

    def walk(node: object, rng: random.Random) -> object:
        if isinstance(node, dict):
            return {k: replacement if rng.random() < share else walk(v, rng) for k, v in node.items()}
        if isinstance(node, list):
            return [replacement if rng.random() < share else walk(v, rng) for v in node]
        return node

    def mutate(data: bytes, rng: random.Random) -> bytes:
        try:
            parsed = json.loads(data)
        except ValueError:  # CSV or XML: swap its numbers instead
            return _swap_numbers(json.dumps(replacement).encode())(data, rng)
        return json.dumps(walk(parsed, rng)).encode()

    return mutate


def _xml_or(json_case: Callable, xml: bytes) -> Callable[[bytes, random.Random], bytes]:
    """`xml` (with the export's body after it) for an XML export, else `json_case`."""

    def mutate(data: bytes, rng: random.Random) -> bytes:
        if data.lstrip().startswith(b"<?xml") or data.lstrip().startswith(b"<annotations"):
            body = data.split(b"?>", 1)[1] if data.lstrip().startswith(b"<?xml") else data
            return xml + body.replace(b"<annotations>", b"<annotations>&lol9;", 1)
        return json_case(data, rng)

    return mutate


_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE annotations [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'.encode()
        for i in range(1, 10)
    )
    + b"]>"
)
_EXTERNAL = b'<?xml version="1.0"?>\n<!DOCTYPE annotations [<!ENTITY lol9 SYSTEM "file:///etc/passwd">]>'

MUTATIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "empty": lambda data, rng: b"",
    "truncated at 10%": lambda data, rng: data[: len(data) // 10],
    "truncated at 50%": lambda data, rng: data[: len(data) // 2],
    "truncated at 99%": lambda data, rng: data[: len(data) * 99 // 100],
    "100,000 brackets": lambda data, rng: b"[" * 100_000 + data + b"]" * 100_000,
    "deep XML or JSON": lambda data, rng: (
        b"<annotations>" + b"<a>" * 100_000 + b"</a>" * 100_000 + b"</annotations>"
        if b"<annotations" in data[:200]
        else b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    ),
    "UTF-16": lambda data, rng: data.decode("utf-8", "replace").encode("utf-16"),
    "BOM": lambda data, rng: b"\xef\xbb\xbf" + data,
    "NUL bytes": lambda data, rng: bytes(b if rng.random() > 0.001 else 0 for b in data),
    "Latin-1 garbage": lambda data, rng: bytes(b if rng.random() > 0.001 else 0xE9 for b in data),
    "numbers NaN": _swap_numbers(b"NaN"),
    "numbers 1e400": _swap_numbers(b"1e400"),
    "numbers -1e308": _swap_numbers(b"-1e308"),
    "numbers negative": _swap_numbers(b"-7"),
    "numbers as strings": _swap_numbers(b'"12"'),
    "values null": _json_nodes(None),
    "values strings": _json_nodes("x"),
    "values lists": _json_nodes([1, [2, [3]]]),
    "values objects": _json_nodes({"name": "polygon", "all_points_x": "x"}),
    "values huge string": _json_nodes("A" * 100_000, share=0.02),
    "values booleans": _json_nodes(True),
    "entity bomb": _xml_or(_json_nodes(-1), _LAUGHS),
    "external entity": _xml_or(_json_nodes(0), _EXTERNAL),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_a_hostile_file_is_read_or_refused_with_its_name(source, mutation, tmp_path):
    original, label_key = SOURCES[source]
    if not original.is_file():
        pytest.skip(f"{original} is absent (../shared/datasets, or tests/files)")
    data = MUTATIONS[mutation](original.read_bytes(), random.Random(f"{source}/{mutation}"))
    path = tmp_path / original.name
    path.write_bytes(data)
    try:
        _, records = read_detected(path, "auto", label_key, Drops())
    except SegflowError as exc:
        message = str(exc)
        assert original.name in message or str(tmp_path) in message, f"the error does not name the file: {message}"
        assert "Traceback" not in message
    except RecursionError as exc:  # pragma: no cover - reported as what it is
        pytest.fail(f"{source}/{mutation}: RecursionError ({exc})")
    else:
        assert isinstance(records, list)
        assert "root:" not in json.dumps([r.filename for r in records])  # the passwd file never becomes data
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], "the reader wrote beside the file"
