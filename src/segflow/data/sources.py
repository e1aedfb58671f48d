"""Data sources of the fetch stage: whatever `fetch.source` names -> a local folder.

================================  ====================================================
fetch.source                      becomes
================================  ====================================================
``data`` or another folder        that folder, read in place
a .zip / .tar.gz / .tgz / .tar    extracted once into the cache, keyed by its sha256
an ``http(s)://`` archive URL     downloaded into the cache (progress bar, resumed from
                                  a ``.part`` file, sha256 checked), then extracted
``cityscapes``                    ``fetch.cityscapes_packages`` downloaded with
                                  cityscapesscripts' downloader (credentials from
                                  CITYSCAPES_USERNAME / CITYSCAPES_PASSWORD), extracted
================================  ====================================================

The cache is a folder the fetch stage is given (``artifacts/cache``), never ``data/``
and never a stage output, so a rerun neither downloads nor extracts again. An archive
whose only top-level entry is a folder is read from inside that folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import requests
from cityscapesscripts.download import downloader
from tqdm import tqdm

from segflow.config import FetchParams
from segflow.data.archives import ARCHIVE_SUFFIXES, ExtractLimits, unpack
from segflow.errors import SourceError
from segflow.outputs import file_sha256

__all__ = ["ARCHIVE_SUFFIXES", "CITYSCAPES_SITE", "materialise", "download", "extract", "unpack"]

#: Where Cityscapes requests go. cityscapesscripts writes the official address into its
#: code; tests point this at a local server.
CITYSCAPES_SITE = "https://www.cityscapes-dataset.com"
_OFFICIAL_SITE = "https://www.cityscapes-dataset.com"
_CHUNK = 1 << 16  # a broken connection loses at most this much of the .part


def _is_archive(path: Path | str) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def download(url: str, sha256: str, folder: Path) -> Path:
    """Download `url` into `folder` unless a verified copy is there; returns the file.

    A broken connection leaves ``<name>.part``, which the next call resumes with an
    HTTP Range request. A finished download whose sha256 is not `sha256` is deleted.
    """
    name = Path(urlparse(url).path).name or "download"
    final = folder / f"{sha256[:16]}-{name}"
    if final.is_file() and file_sha256(final) == sha256:
        return final
    folder.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    done = part.stat().st_size if part.is_file() else 0
    try:
        with requests.get(
            url, stream=True, timeout=60, headers={"Range": f"bytes={done}-"} if done else {}
        ) as response:
            if response.status_code != 416:  # 416: the .part already holds every byte
                response.raise_for_status()
                if response.status_code != 206:  # the server ignored Range: start over
                    done = 0
                size = int(response.headers.get("Content-Length", 0))
                with (
                    part.open("ab" if done else "wb") as out,
                    tqdm(
                        total=done + size or None,
                        initial=done,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=f"download {name}",
                    ) as bar,
                ):
                    for chunk in response.iter_content(_CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
    except requests.RequestException as exc:
        raise SourceError(
            f"{url}: download failed ({exc}); rerun to resume from {part}", reason="download failed"
        ) from exc
    if not part.is_file():
        raise SourceError(
            f"{url}: the server sent nothing (HTTP 416 to a fresh download); check the URL", reason="download failed"
        )
    actual = file_sha256(part)
    if actual != sha256:
        part.unlink()
        raise SourceError(
            f"{url}: sha256 mismatch: expected {sha256} (fetch.sha256), got {actual}; the "
            "download was deleted. Check the URL, or fetch.sha256 if the archive changed",
            reason="download failed",
        )
    part.rename(final)
    return final


def _inside(folder: Path) -> Path:
    """`folder`, or its only sub-folder when that is all it holds (an archive's wrapper)."""
    entries = [entry for entry in folder.iterdir() if entry.name != "__MACOSX"]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


def extract(archives: list[Path], folder: Path, key: str, limits: ExtractLimits | None = None) -> Path:
    """Extract `archives` together into ``folder/key`` once; returns the data folder.

    `limits` hold for each archive (see `segflow.data.archives`); an archive over one, or
    unreadable, leaves nothing behind: the staging folder is deleted."""
    target = folder / key
    if not target.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder))
        try:
            for archive in archives:
                unpack(archive, staging, limits)
            staging.rename(target)  # only a complete extraction gets the final name
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return _inside(target)


class _SiteSession(requests.Session):
    """A session sending cityscapesscripts' hard-coded URLs to `CITYSCAPES_SITE`."""

    def request(self, method: str, url: str | bytes, *args: object, **kwargs: object) -> requests.Response:  # type: ignore[override]
        if isinstance(url, str) and url.startswith(_OFFICIAL_SITE):
            url = CITYSCAPES_SITE + url[len(_OFFICIAL_SITE) :]
        return super().request(method, url, *args, **kwargs)


def _cityscapes_session() -> requests.Session:
    """A logged-in session, as `downloader.login` makes, minus its prompt and credential file."""
    username, password = os.environ.get("CITYSCAPES_USERNAME"), os.environ.get("CITYSCAPES_PASSWORD")
    if not username or not password:
        raise SourceError(
            "fetch.source is 'cityscapes': set CITYSCAPES_USERNAME and CITYSCAPES_PASSWORD in "
            "the environment (an account from https://www.cityscapes-dataset.com/register/)"
        )
    session = _SiteSession()
    try:
        session.get(f"{_OFFICIAL_SITE}/login", allow_redirects=False, timeout=60).raise_for_status()
        response = session.post(
            f"{_OFFICIAL_SITE}/login",
            allow_redirects=False,
            timeout=60,
            data={"username": username, "password": password, "submit": "Login"},
        )
        response.raise_for_status()
    except requests.RequestException as exc:
        raise SourceError(f"{CITYSCAPES_SITE}: cannot log in ({exc}); check the network") from exc
    if response.status_code != 302:  # the site redirects after a successful login
        raise SourceError(f"{CITYSCAPES_SITE}: login refused; check CITYSCAPES_USERNAME and CITYSCAPES_PASSWORD")
    return session


def download_cityscapes(packages: list[str], folder: Path) -> list[Path]:
    """Download Cityscapes `packages` into `folder` (resuming, MD5-checked by the downloader)."""
    folder.mkdir(parents=True, exist_ok=True)
    pending = [p for p in packages if not (folder / f"{p}.done").is_file()]
    session = _cityscapes_session() if pending else None
    for package in pending:
        target = folder / package
        try:
            downloader.download_packages(
                session=session,
                package_names=[package],
                destination_path=str(folder),
                resume=target.is_file(),
            )
        except requests.RequestException as exc:
            raise SourceError(f"Cityscapes package {package}: download failed ({exc}); rerun to resume") from exc
        except Exception as exc:  # the downloader raises bare Exceptions (unknown package, MD5)
            if "MD5" in str(exc):
                target.unlink(missing_ok=True)
            raise SourceError(
                f"Cityscapes package {package}: {exc}; check fetch.cityscapes_packages "
                "(names as listed by `csDownload -l`)",
                reason="download failed",
            ) from exc
        (folder / f"{package}.done").touch()
    return [folder / package for package in packages]


def materialise(fetch: FetchParams, cache: Path) -> Path:
    """The local folder holding the data `fetch.source` names (see the module docstring)."""
    source = fetch.source
    if source == "cityscapes":
        archives = download_cityscapes(fetch.cityscapes_packages, cache / "cityscapes")
        key = hashlib.sha256("\n".join(fetch.cityscapes_packages).encode()).hexdigest()[:16]
        return extract(archives, cache / "extracted", f"cityscapes-{key}", ExtractLimits.of(fetch))
    if source.startswith(("http://", "https://")):
        archive = download(source, str(fetch.sha256), cache / "downloads")
        return extract([archive], cache / "extracted", str(fetch.sha256)[:16], ExtractLimits.of(fetch))
    path = Path(source)
    if path.is_dir():
        return path
    if not path.is_file():
        raise SourceError(
            f"{path}: fetch.source not found; give a folder, an archive, an http(s) URL or "
            "'cityscapes' (for the default 'data', run `dvc pull`)"
        )
    if not _is_archive(path):
        raise SourceError(f"{path}: fetch.source is a file but not an archive ({list(ARCHIVE_SUFFIXES)})")
    digest = file_sha256(path)
    if fetch.sha256 and digest != fetch.sha256:
        raise SourceError(f"{path}: sha256 mismatch: expected {fetch.sha256} (fetch.sha256), got {digest}")
    return extract([path], cache / "extracted", digest[:16], ExtractLimits.of(fetch))
