"""Talking to one Label Studio server: its API with a token, and its files, nothing else.

`LabelStudio(url, token)` is that server. Every address it requests is checked to lie
below `url` (same scheme, host and port, under its path), so a task whose image URL names
another machine (``http://169.254.169.254/...``, ``//evil.example/x.png``) is refused, not
fetched with the token; redirects are not followed for the same reason.

The token is the one of Account & Settings: a personal access token (a JWT, exchanged at
``/api/token/refresh`` for short-lived access tokens sent as ``Bearer``) or a legacy token
(sent as ``Token``). It comes from the environment (`TOKEN_ENV`), never the command line,
where other users of the machine could read it.
"""

from __future__ import annotations

import os
from urllib.parse import urljoin, urlsplit

import httpx

from segflow.errors import SegflowError

__all__ = ["URL_ENV", "TOKEN_ENV", "LabelStudioError", "LabelStudio"]

#: Where Label Studio runs (as its SDK names it), e.g. http://127.0.0.1:8080.
URL_ENV = "LABEL_STUDIO_URL"
#: Its access token (Account & Settings), as its SDK names it.
TOKEN_ENV = "LABEL_STUDIO_API_KEY"
#: Seconds to connect and to wait for each response (an export of a big project is slow).
TIMEOUT = httpx.Timeout(60.0, connect=5.0)


class LabelStudioError(SegflowError):
    """Label Studio could not be reached, refused the token, or sent something unusable."""


def _base(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.query:
        raise LabelStudioError(
            f"Label Studio URL {url!r}: give http(s)://host:port of the server, e.g. http://127.0.0.1:8080 "
            f"(--label-studio or {URL_ENV}), without user, password or query"
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


class LabelStudio:
    """A Label Studio server at `url` (http(s)://host[:port][/prefix]) used with `token`."""

    def __init__(self, url: str, token: str) -> None:
        self.url = _base(url)
        if not token.strip():
            raise LabelStudioError(
                f"no Label Studio token: set {TOKEN_ENV} to the access token of Account & Settings in Label Studio"
            )
        self._token = token.strip()
        self._access: str | None = None
        self._http = httpx.Client(timeout=TIMEOUT, follow_redirects=False)

    @classmethod
    def from_env(cls, url: str | None = None) -> LabelStudio:
        """The server at `url` (else $LABEL_STUDIO_URL) with the token $LABEL_STUDIO_API_KEY."""
        url = url or os.environ.get(URL_ENV, "")
        if not url:
            raise LabelStudioError(f"where is Label Studio? give --label-studio http://host:port or set {URL_ENV}")
        return cls(url, os.environ.get(TOKEN_ENV, ""))

    def address(self, url: str) -> str:
        """`url` (absolute, or relative to the server as task data is) if it lies below the server.

        Raises:
            LabelStudioError: it points anywhere else.
        """
        full = urljoin(self.url + "/", url.strip())
        base, parts = urlsplit(self.url), urlsplit(full)
        inside = (parts.scheme, parts.netloc) == (base.scheme, base.netloc) and (
            parts.path == base.path or parts.path.startswith(base.path + "/")
        )
        if not inside or ".." in parts.path.split("/"):
            raise LabelStudioError(
                f"{url!r} is not a file of the Label Studio server {self.url}: only its own files are fetched "
                "(import the photos into Label Studio, or serve them through its storage)"
            )
        return full

    def _authorization(self, renew: bool = False) -> str:
        if self._token.count(".") != 2:
            return f"Token {self._token}"
        if self._access is None or renew:  # a personal access token: trade it for an access token
            answer = self._send("POST", "/api/token/refresh/", json={"refresh": self._token}, auth=False)
            self._access = answer.json().get("access")
        return f"Bearer {self._access}"

    def _send(self, method: str, path: str, auth: bool = True, **kwargs) -> httpx.Response:  # noqa: ANN003
        url = self.address(path)
        headers = {"Authorization": self._authorization()} if auth else {}
        try:
            response = self._http.request(method, url, headers=headers, **kwargs)
            if response.status_code == 401 and auth and self._access is not None:  # the access token expired
                response = self._http.request(
                    method, url, headers={"Authorization": self._authorization(True)}, **kwargs
                )
        except httpx.HTTPError as exc:
            raise LabelStudioError(
                f"cannot reach Label Studio at {self.url} ({type(exc).__name__}: {exc}): is it running, and is "
                f"the URL right (--label-studio or {URL_ENV})?"
            ) from None
        self._check(response, url)
        return response

    def _check(self, response: httpx.Response, url: str) -> None:
        status = response.status_code
        if status in (401, 403):
            raise LabelStudioError(
                f"Label Studio refused the token ({status} for {url}): set {TOKEN_ENV} to the access token of "
                "Account & Settings (a legacy token needs legacy tokens enabled in Organization settings)"
            )
        if status == 404:
            raise LabelStudioError(f"{url}: not found on Label Studio (404): check the project id and the URL")
        if 300 <= status < 400:
            raise LabelStudioError(f"{url}: Label Studio redirects ({status}) elsewhere; give the URL it names")
        if status >= 400:
            raise LabelStudioError(f"{url}: Label Studio answered {status}: {response.text[:300]}")

    def get(self, path: str, **params: object) -> object:
        """The JSON of GET `path` (below the server)."""
        response = self._send("GET", path, params=params)
        try:
            return response.json()
        except ValueError:
            raise LabelStudioError(
                f"{path}: Label Studio sent no JSON (is {self.url} Label Studio, not another site?)"
            ) from None

    def download(self, url: str, limit: int) -> bytes:
        """The file at `url` (below the server), refused past `limit` bytes.

        Raises:
            LabelStudioError: not below the server, unreachable, refused, or too big.
        """
        full = self.address(url)
        too_big = f"{url}: more than {limit:,} bytes (serve.max_upload_bytes); resize the photo in Label Studio"
        try:
            with self._http.stream("GET", full, headers={"Authorization": self._authorization()}) as response:
                self._check(response, full)
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise LabelStudioError(too_big)
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise LabelStudioError(too_big)
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise LabelStudioError(f"cannot fetch {full} from Label Studio ({type(exc).__name__}: {exc})") from None
        return b"".join(chunks)

    def close(self) -> None:
        self._http.close()
