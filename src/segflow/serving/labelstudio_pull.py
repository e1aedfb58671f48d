"""`segflow pull-annotations`: a Label Studio project's finished annotations into a folder
that ``fetch.source`` reads (segflow's Label Studio reader) and DVC versions.

The folder holds ``label-studio.json`` (the project's JSON export: every task with a
submitted annotation, the corrections of the ML backend's predictions included) and
``images/`` (each task's photo, fetched from Label Studio under the name the reader looks
for). It is rebuilt whole on each pull (written beside it, then swapped in), so tasks
deleted in Label Studio leave it too; a folder that a pull did not write is never replaced.
Nothing else is touched: ``dvc add`` (or ``dvc commit``) and ``dvc repro`` are yours to run.
"""

from __future__ import annotations

import json
import posixpath
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from segflow.serving.labelstudio_client import LabelStudio, LabelStudioError

__all__ = ["EXPORT_NAME", "MARKER", "PullReport", "pull_annotations"]

#: The export's file name in the folder (the reader finds images below its folder).
EXPORT_NAME = "label-studio.json"
#: The file that marks a folder as written by a pull (what it was pulled from).
MARKER = ".segflow-pull.json"


@dataclass(frozen=True)
class PullReport:
    title: str
    tasks: int
    annotations: int
    images: int


def _image_url(task: dict) -> str:
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    if isinstance(data.get("image"), str):
        return data["image"]
    values = [v for v in data.values() if isinstance(v, str)]
    if len(values) != 1:
        raise LabelStudioError(f"task {task.get('id')}: which 'data' value is the photo? {sorted(data)}")
    return values[0]


def _image_name(url: str, task_id: object) -> str:
    """Where the reader looks for the photo of `url`: its file name (or local-files path)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    name = query["d"][0] if parts.path.startswith("/data/local-files") and "d" in query else unquote(parts.path)
    name = posixpath.normpath(name).lstrip("/")
    if parts.path.startswith("/data/upload") or not name:
        name = posixpath.basename(name)
    if not name or name.startswith("..") or "/../" in f"/{name}/":
        raise LabelStudioError(f"task {task_id}: cannot name the photo of {url!r} safely")
    return name


def _project(studio: LabelStudio, project: int) -> dict:
    try:
        return studio.get(f"/api/projects/{project}")  # type: ignore[return-value]
    except LabelStudioError as exc:
        if "(404)" not in str(exc):
            raise
        listed = studio.get("/api/projects", page_size=50)
        rows = listed.get("results", []) if isinstance(listed, dict) else listed
        known = ", ".join(f"{p.get('id')} ({p.get('title')!r})" for p in rows if isinstance(p, dict))
        raise LabelStudioError(
            f"no project {project} on Label Studio at {studio.url}: its projects are {known or 'none'}; "
            "give --project with one of these ids (the number in the project's URL)"
        ) from None


def pull_annotations(studio: LabelStudio, project: int, out: Path, max_bytes: int) -> PullReport:
    """Write project `project`'s annotated tasks and their photos to `out` (replaced whole).

    Raises:
        LabelStudioError: unreachable, bad token, no such project, a photo over `max_bytes`,
            or `out` is a non-empty folder no pull wrote.
    """
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise LabelStudioError(
            f"{out} holds files that no `segflow pull-annotations` wrote; give a new or empty folder "
            "(a pull replaces it whole)"
        )
    meta = _project(studio, project)
    tasks = studio.get(f"/api/projects/{project}/export", exportType="JSON", download_all_tasks="false")
    if not isinstance(tasks, list):
        raise LabelStudioError(f"project {project}: the export is not a list of tasks ({type(tasks).__name__})")
    done = [
        t for t in tasks if isinstance(t, dict) and any(not a.get("was_cancelled") for a in t.get("annotations") or [])
    ]
    staging = out.with_name(f".{out.name}.pulling")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    try:
        names: set[str] = set()
        for task in done:
            url = _image_url(task)
            name = _image_name(url, task.get("id"))
            if name not in names:
                target = staging / "images" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(studio.download(url, max_bytes))
                names.add(name)
        export = json.dumps(done, indent=1, sort_keys=True, ensure_ascii=False)
        (staging / EXPORT_NAME).write_text(export + "\n", encoding="utf-8")
        source = {"label_studio": studio.url, "project": project, "title": meta.get("title")}
        (staging / MARKER).write_text(json.dumps(source, indent=1) + "\n", encoding="utf-8")
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    annotations = sum(len(t.get("annotations") or []) for t in done)
    return PullReport(str(meta.get("title")), len(done), annotations, len(names))
