"""The service's guards against other web sites and other machines.

* `AllowedHosts`: every request's Host header must be in `serve.allowed_hosts` (or be
  `serve.host`), else 400, so a web page whose domain is re-pointed at this machine (DNS
  rebinding) cannot use the service.
* `SecurityHeaders`: every response carries `HEADERS`: a Content-Security-Policy that lets
  a page run only the service's own scripts and styles (no inline code, nothing from other
  sites) and never be framed, nosniff, and no Referer to anywhere.
* `mutation_guard`: the dependency of state-changing endpoints (POST /reload). The bearer
  token of $SEGFLOW_SERVE_TOKEN when that is set (refused outright, 403, on a non-loopback
  `serve.host` when it is not); and a request a browser sent from another site is refused
  (403) even on loopback: its Origin, Referer or Sec-Fetch-Site names another origin, or,
  without the token, it carries none of them and a body type a cross-site form can send
  (text/plain, a form), which old browsers post without an Origin. curl's bare
  ``curl -X POST .../reload`` (no body, no Origin) and a JSON request pass: a browser cannot
  send JSON to another site without a CORS preflight, which this service never grants.
  POST /predict changes nothing, so it takes uploads from anywhere, as curl and the page send them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import os
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import Headers, MutableHeaders

from segflow.config import ServeParams

__all__ = [
    "TOKEN_ENV",
    "CSP",
    "HEADERS",
    "AllowedHosts",
    "SecurityHeaders",
    "allowed_hosts",
    "add_docs",
    "mutation_guard",
]

log = logging.getLogger(__name__)

#: Environment variable holding the bearer token POST /reload requires (a secret: never in params.yaml).
TOKEN_ENV = "SEGFLOW_SERVE_TOKEN"
#: The page's policy: its script and stylesheet come from the service (/static/...), the
#: photo and mask are blob: and data: images, it fetches only the API; no plugins, no
#: <base>, no form posts elsewhere, never inside another site's frame.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: Headers on every response of the page and the API.
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
    "Referrer-Policy": "no-referrer",
}
#: Where FastAPI's doc pages load Swagger UI and ReDoc from (only with serve.docs: true).
DOCS_CDN = "https://cdn.jsdelivr.net"
#: Body types a browser sends to another site without a CORS preflight (HTML forms, text/plain fetch).
_FORM_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """serve.host as an IP address; None for a name (which may resolve to anything)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def allowed_hosts(serve: ServeParams) -> frozenset[str]:
    """serve.allowed_hosts and serve.host, unless that is a wildcard like 0.0.0.0: browsers
    reach this machine by that name too, so allowing it would let any web page in."""
    address = _address(serve.host)
    bound = set() if address is not None and address.is_unspecified else {serve.host.lower()}
    return frozenset(serve.allowed_hosts) | bound


def _host_name(header: str) -> str:
    """The name in a Host header, without the port: "[::1]:8000" -> "::1"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.partition(":")[0]


class AllowedHosts:
    """ASGI middleware: a 400 for a Host header not in `allowed` (unless it holds "*")."""

    def __init__(self, app, allowed: frozenset[str]) -> None:  # noqa: ANN001 (an ASGI app)
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http" or "*" in self.allowed:
            return await self.app(scope, receive, send)
        host = _host_name(Headers(scope=scope).get("host", ""))
        if host in self.allowed:
            return await self.app(scope, receive, send)
        detail = (
            f"Host header {host!r} is not in serve.allowed_hosts {sorted(self.allowed)}: add the name "
            "clients use to reach the service there in params.yaml ('*' allows any)"
        )
        await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware: `HEADERS` on every HTTP response, with `policies` (path -> CSP)
    replacing the page's policy where another page needs its own (the opt-in API docs)."""

    def __init__(self, app, policies: dict[str, str] | None = None) -> None:  # noqa: ANN001 (an ASGI app)
        self.app, self.policies = app, policies or {}

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = self.policies.get(scope["path"], CSP)

        async def add_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                headers["Content-Security-Policy"] = csp
            await send(message)

        await self.app(scope, receive, add_headers)


def add_docs(app: FastAPI) -> dict[str, str]:
    """GET /docs (Swagger UI) and /redoc on `app`'s /openapi.json; returns their policies.

    Both load their code from `DOCS_CDN`, so their policy allows it, Swagger UI's inline
    script by its hash, and inline styles (ReDoc writes its styles at run time); the page
    and the API keep `CSP`.
    """
    swagger = get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title}: API", swagger_favicon_url="")
    redoc = get_redoc_html(
        openapi_url="/openapi.json", title=f"{app.title}: API", redoc_favicon_url="", with_google_fonts=False
    )
    script = swagger.body.split(b"<script>")[1].split(b"</script>")[0]
    digest = base64.b64encode(hashlib.sha256(script).digest()).decode("ascii")
    policy = (
        f"default-src 'none'; script-src {DOCS_CDN} 'sha256-{digest}'; style-src {DOCS_CDN} 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; worker-src blob:; base-uri 'none'; frame-ancestors 'none'"
    )
    app.add_api_route("/docs", lambda: HTMLResponse(swagger.body), methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", lambda: HTMLResponse(redoc.body), methods=["GET"], include_in_schema=False)
    return {"/docs": policy, "/redoc": policy}


def _same_origin(url: str, host: str) -> bool:
    """Whether `url` (an Origin or Referer) names the host and port the request was sent to."""
    try:
        netloc = urlsplit(url).netloc.lower()
    except ValueError:
        return False
    return bool(netloc) and netloc == host.strip().lower()


def _cross_site(request: Request) -> str | None:
    """Why `request` looks sent by a browser from another site, or None."""
    headers, host = request.headers, request.headers.get("host", "")
    site = headers.get("sec-fetch-site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        return f"Sec-Fetch-Site: {site}"
    for name in ("origin", "referer"):  # a browser always sends Origin on a POST; Referer if Origin is missing
        if name in headers:
            value = headers[name]
            return None if _same_origin(value, host) else f"{name.title()}: {value}"
    return None


def mutation_guard(serve: ServeParams):  # noqa: ANN201 (a FastAPI dependency)
    """The dependency of state-changing endpoints: token and origin checks (module docstring)."""
    token = os.environ.get(TOKEN_ENV) or None
    address = _address(serve.host)
    exposed = serve.host.lower() != "localhost" and not (address is not None and address.is_loopback)
    if exposed and token is None:
        log.warning(
            "POST /reload is refused: %s is reachable beyond this machine and %s is not set", serve.host, TOKEN_ENV
        )

    async def guard(request: Request) -> None:
        action = f"{request.method} {request.url.path}"
        if token is None and exposed:
            raise HTTPException(
                403,
                f"{action} is disabled: the service listens on {serve.host} (serve.host), beyond this "
                f"machine, without a token; set {TOKEN_ENV} where it runs and send 'Authorization: Bearer <token>'",
            )
        if token is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                raise HTTPException(
                    401,
                    f"missing or wrong token: send 'Authorization: Bearer <the value of {TOKEN_ENV} "
                    "where the service runs>'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        why = _cross_site(request)
        if why is None and token is None and not any(h in request.headers for h in ("origin", "referer")):
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            why = f"Content-Type: {kind} without an Origin" if kind in _FORM_TYPES else None
        if why is not None:
            raise HTTPException(
                403,
                f"{action} refused: it comes from another web site ({why}); send it from this service's "
                "own page, or from a script: 'curl -X POST <service>/reload' (no body), with "
                f"Content-Type: application/json, or with 'Authorization: Bearer <{TOKEN_ENV}>'",
            )

    return guard
