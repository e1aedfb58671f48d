"""Sources of the fetch stage: folders, archives, an https archive, a Cityscapes download.

The network is a local HTTP server on 127.0.0.1 (started per test); nothing here
touches the internet.
"""

from __future__ import annotations

import hashlib
import io
import json
import resource
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from helpers import write_cityscapes, zip_bomb
from pydantic import ValidationError

from segflow.data import sources
from segflow.data.fetch import fetch
from segflow.errors import SourceError


def zip_folder(folder: Path, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, prefix + path.relative_to(folder).as_posix())
    return buffer.getvalue()


class Site:
    """What the local server serves: files by path (with Range), and a fake Cityscapes site."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate_once: set[str] = set()  # paths whose first answer breaks off halfway
        self.requests: list[tuple[str, str, str | None]] = []
        self.credentials = {"username": "ada", "password": "s3cret"}
        self.packages: dict[str, bytes] = {}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def send(self, status: int, body: bytes, headers: dict | None = None, length: int | None = None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)

            def send_file(self, data: bytes, key: str) -> None:
                start = int((self.headers.get("Range") or "bytes=0-")[6:].rstrip("-"))
                if start >= len(data) and start:
                    return self.send(416, b"")
                status = 206 if start else 200
                headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
                if key in site.truncate_once:  # promise every byte, send half, hang up
                    site.truncate_once.discard(key)
                    self.send(status, data[start:][: len(data) // 2], headers, length=len(data) - start)
                    self.close_connection = True
                    return None
                return self.send(status, data[start:], headers)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                site.requests.append(("GET", self.path, self.headers.get("Range")))
                names = list(site.packages)
                if url.path in site.files:
                    self.send_file(site.files[url.path], url.path)
                elif url.path == "/login":
                    self.send(200, b"<form>login</form>")
                elif url.path == "/downloads/" and "list" in url.query:
                    listing = [
                        {"name": name, "packageID": str(i), "size": "1 KB", "thirdparty": "0"}
                        for i, name in enumerate(names)
                    ]
                    self.send(200, json.dumps(listing).encode())
                elif url.path in ("/md5-sum/", "/file-handling/"):
                    name = names[int(query["packageID"][0])]
                    data = site.packages[name]
                    if url.path == "/md5-sum/":
                        self.send(200, f"{hashlib.md5(data).hexdigest()}  {name}".encode())
                    else:
                        self.send_file(data, name)
                else:
                    self.send(404, b"not found")

            def do_POST(self) -> None:
                site.requests.append(("POST", self.path, None))
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                given = {key: values[0] for key, values in form.items()}
                ok = all(given.get(key) == value for key, value in site.credentials.items())
                self.send(302 if ok else 200, b"", {"Location": "/"} if ok else {})

        return Handler


@pytest.fixture
def site(monkeypatch):
    """A local HTTP server; yields (Site, base URL). Cityscapes requests are sent to it."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    state = Site()
    server = ThreadingHTTPServer(("127.0.0.1", 0), state.handler())
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(sources, "CITYSCAPES_SITE", base)
    yield state, base
    server.shutdown()
    server.server_close()


def test_local_folder_zip_and_tar(via_dataset, make_params, tmp_path):
    zip_path = tmp_path / "photos.zip"
    zip_path.write_bytes(zip_folder(via_dataset, prefix="photos/"))  # one wrapper folder
    tar_path = tmp_path / "photos.tar.gz"
    with tarfile.open(tar_path, "w:gz") as bundle:
        bundle.add(via_dataset, arcname=".")
    for source in (via_dataset, zip_path, tar_path):
        out = tmp_path / f"fetch-{source.name}"
        manifest = fetch(make_params(fetch={"source": str(source)}), out, cache_dir=tmp_path / "cache")
        assert manifest.images == 2 and (out / "images" / "a.jpg").is_file()
    assert len(list((tmp_path / "cache" / "extracted").iterdir())) == 2  # kept, keyed by sha256
    bad = make_params(fetch={"source": str(zip_path), "sha256": "0" * 64})
    with pytest.raises(
        SourceError, match=f"expected {'0' * 64} .*got {hashlib.sha256(zip_path.read_bytes()).hexdigest()}"
    ):
        fetch(bad, tmp_path / "bad")
    with pytest.raises(SourceError, match="fetch.source not found"):
        fetch(make_params(fetch={"source": str(tmp_path / "nowhere")}), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_url_download_verify_resume_and_reuse(via_dataset, make_params, tmp_path, site, monkeypatch):
    state, base = site
    monkeypatch.setattr(sources, "_CHUNK", 256)  # so the broken first answer leaves some bytes
    data = zip_folder(via_dataset)
    digest = hashlib.sha256(data).hexdigest()
    state.files["/photos.zip"] = data
    state.truncate_once.add("/photos.zip")
    params = make_params(fetch={"source": f"{base}/photos.zip", "sha256": digest})
    cache = tmp_path / "cache"
    with pytest.raises(SourceError, match="download failed .*rerun to resume"):
        fetch(params, tmp_path / "fetch", cache_dir=cache)
    part = cache / "downloads" / f"{digest[:16]}-photos.zip.part"
    kept = part.stat().st_size
    assert 0 < kept <= len(data) // 2 and not (tmp_path / "fetch").exists()
    manifest = fetch(params, tmp_path / "fetch", cache_dir=cache)  # resumes from the .part
    assert manifest.images == 2 and not part.exists()
    assert state.requests[-1] == ("GET", "/photos.zip", f"bytes={kept}-")
    asked = len(state.requests)
    fetch(params, tmp_path / "fetch", cache_dir=cache)  # verified copy in the cache: no request
    assert len(state.requests) == asked


def test_url_hash_mismatch_names_both_and_leaves_nothing(via_dataset, make_params, tmp_path, site):
    state, base = site
    state.files["/photos.zip"] = zip_folder(via_dataset)
    actual = hashlib.sha256(state.files["/photos.zip"]).hexdigest()
    params = make_params(fetch={"source": f"{base}/photos.zip", "sha256": "ab" * 32})
    with pytest.raises(SourceError) as raised:
        fetch(params, tmp_path / "fetch", cache_dir=tmp_path / "cache")
    assert f"expected {'ab' * 32}" in str(raised.value) and f"got {actual}" in str(raised.value)
    assert list((tmp_path / "cache" / "downloads").iterdir()) == []
    assert not (tmp_path / "fetch").exists()


def test_url_needs_sha256(make_params):
    with pytest.raises(ValidationError, match="set fetch.sha256"):
        make_params(fetch={"source": "https://example.org/photos.zip"})


def cityscapes_packages(tmp_path: Path) -> dict[str, bytes]:
    raw = tmp_path / "raw"
    write_cityscapes(raw, frames=2, split="train")
    return {
        "gtFine_trainvaltest.zip": zip_folder(raw / "gtFine", prefix="gtFine/"),
        "leftImg8bit_trainvaltest.zip": zip_folder(raw / "leftImg8bit", prefix="leftImg8bit/"),
    }


def test_cityscapes_download_through_cityscapesscripts(tmp_path, make_params, site, monkeypatch):
    state, _ = site
    state.packages = cityscapes_packages(tmp_path)
    params = make_params(
        classes={"names": None, "label_map": {}, "palette": [], "preset": "cityscapes"},
        fetch={"source": "cityscapes", "annotations": "."},
        rasterize={"unlabeled": "ignore"},
    )
    monkeypatch.delenv("CITYSCAPES_USERNAME", raising=False)
    with pytest.raises(SourceError, match="set CITYSCAPES_USERNAME and CITYSCAPES_PASSWORD"):
        fetch(params, tmp_path / "fetch", cache_dir=tmp_path / "cache")
    monkeypatch.setenv("CITYSCAPES_USERNAME", "ada")
    monkeypatch.setenv("CITYSCAPES_PASSWORD", "wrong")
    with pytest.raises(SourceError, match="login refused"):
        fetch(params, tmp_path / "fetch", cache_dir=tmp_path / "cache")
    monkeypatch.setenv("CITYSCAPES_PASSWORD", "s3cret")
    manifest = fetch(params, tmp_path / "fetch", cache_dir=tmp_path / "cache")
    assert manifest.format == "cityscapes" and manifest.images == 2
    assert ("GET", "/file-handling/?packageID=1", None) in state.requests
    asked = len(state.requests)
    fetch(params, tmp_path / "fetch", cache_dir=tmp_path / "cache")  # downloaded and extracted once
    assert len(state.requests) == asked


# --- issue 22: archive bombs, counted while extracting; nothing partial left ---

BOMB_LIMITS = {  # fetch settings: (the key named, what the message says)
    "ratio": ({}, "fetch.max_compression_ratio", "x), over the limit (200x, fetch.max_compression_ratio)"),
    "bytes": (
        {"max_compression_ratio": 1e6, "max_extract_bytes": 50_000_000},
        "fetch.max_extract_bytes",
        "writes more than 50,000,000 bytes, the limit (fetch.max_extract_bytes)",
    ),
    "files": (
        {"max_extract_files": 3},
        "fetch.max_extract_files",
        "makes more than 3 files, the limit (fetch.max_extract_files)",
    ),
}


@pytest.mark.parametrize("case", sorted(BOMB_LIMITS))
def test_zip_bomb_stops_at_the_limit_names_the_key_and_leaves_nothing(case, via_dataset, make_params, tmp_path):
    settings, key, fragment = BOMB_LIMITS[case]
    bomb = zip_bomb(tmp_path / "photos.zip", 300, beside=via_dataset)  # 300 MB of zeros in ~300 KB
    assert bomb.stat().st_size < 1_000_000
    cache = tmp_path / "artifacts" / "cache"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SourceError) as raised:
        fetch(make_params(fetch={"source": str(bomb), **settings}), tmp_path / "artifacts" / "fetch", cache_dir=cache)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    message = str(raised.value)
    assert message.startswith(f"{bomb}: extracting it ") and key in message and fragment in message, message
    assert "partial extraction was deleted" in message and f"raise {key}" in message
    assert list((cache / "extracted").iterdir()) == []  # the staging folder is gone
    assert not (tmp_path / "artifacts" / "fetch").exists()
    assert grown_mb < 100  # streamed a chunk at a time


def test_tar_bomb_is_stopped_too_and_a_dataset_within_the_limits_extracts(via_dataset, make_params, tmp_path):
    (via_dataset / "zeros.bin").write_bytes(bytes(100 << 20))
    bomb = tmp_path / "photos.tar.gz"
    with tarfile.open(bomb, "w:gz") as bundle:
        bundle.add(via_dataset, arcname="photos")
    cache = tmp_path / "cache"
    with pytest.raises(
        SourceError, match=r"photos.tar.gz: extracting it writes .* \(200x, fetch.max_compression_ratio\)"
    ):
        fetch(make_params(fetch={"source": str(bomb)}), tmp_path / "fetch", cache_dir=cache)
    assert list((cache / "extracted").iterdir()) == []
    lenient = {"source": str(bomb), "max_compression_ratio": 10_000}
    manifest = fetch(make_params(fetch=lenient), tmp_path / "fetch", cache_dir=cache)
    assert manifest.images == 2
    assert len(list((cache / "extracted").iterdir())) == 1  # the complete extraction, kept


def test_members_may_not_leave_the_folder(tmp_path):
    into = tmp_path / "into" / "deep"
    sneaky = tmp_path / "sneaky.zip"
    with zipfile.ZipFile(sneaky, "w") as bundle:
        bundle.writestr("../up.txt", "x")
        bundle.writestr("/abs.txt", "x")
        bundle.writestr("C:/drive.txt", "x")
        bundle.writestr("ok/in.txt", "x")
    sources.unpack(sneaky, into)
    assert sorted(p.relative_to(into).as_posix() for p in into.rglob("*.txt")) == [
        "abs.txt",
        "drive.txt",
        "ok/in.txt",
        "up.txt",
    ]
    assert not (tmp_path / "into" / "up.txt").exists()
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        linked = tmp_path / f"link-{kind!r}.tar"
        with tarfile.open(linked, "w") as bundle:
            member = tarfile.TarInfo("out")
            member.type, member.linkname = kind, "../../outside.txt" if kind == tarfile.SYMTYPE else "/etc/passwd"
            bundle.addfile(member)
        with pytest.raises(SourceError, match=f"{linked}: cannot extract the archive .*(outside|absolute)"):
            sources.unpack(linked, tmp_path / f"t-{kind!r}")
        assert not (tmp_path / f"t-{kind!r}" / "out").exists()
