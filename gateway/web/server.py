"""The web server: the standard library's ThreadingHTTPServer in a daemon thread.

Why the standard library: on a Pi Zero 2 W (512 MB) every megabyte counts, and the view is a
handful of read-only GET routes, one Server-Sent Events stream and ``/metrics``. A thread per
request costs a few hundred KB; the accept loop wakes twice a second when idle. A slow or
stalled browser blocks only its own thread (its socket writes time out), never the loop, which
only swaps a snapshot in a holder.

Security (SPEC section 8): read-only (GET and HEAD; anything else is 405); every name escaped
(pages.py); a strict Content-Security-Policy with no inline script; beyond localhost a token
(``Authorization: Bearer``, a ``?token=`` that sets an HttpOnly cookie for the page's own
EventSource and links, or that cookie) or a TLS client certificate; on localhost without a
token only a localhost ``Host`` is served (a page elsewhere cannot rebind a name to it).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import socket
import ssl
import threading
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.config import WebSettings, is_localhost, listen_address
from gateway.errors import ConfigError
from gateway.web import pages
from gateway.web.metrics import registry
from gateway.web.provider import NotFound, NotReady, Provider

logger = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
STATIC = {
    "gateway.js": "text/javascript; charset=utf-8",
    "meter.js": "text/javascript; charset=utf-8",
    "fleet.js": "text/javascript; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
COOKIE = "amr_token"
MAX_STREAMS = 16  # open SSE streams; more get a 503 (each holds a thread)
KEEPALIVE_S = 15.0
SOCKET_TIMEOUT_S = 30.0  # a stalled client's read or write gives up after this
METER_PATH = re.compile(r"/meter/([^/]{1,200}(?:/[^/]{1,200})?)")  # a fleet's: GATEWAY/METER
API_METER_PATH = re.compile(r"/api/meters/([^/]{1,200})(?:/(bill\.csv|intervals\.csv|espi\.xml))?")


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def read_token(path: str, where: str) -> str:
    """Return the token in a file (stripped); ConfigError naming the key when unusable."""
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(token) < 16 or any(c.isspace() for c in token) or not token.isascii():
        raise ConfigError(f"{where}: {path}: the token must be 16 or more ASCII characters")
    return token


def tls_context(web: WebSettings, where: str) -> ssl.SSLContext | None:
    if web.cert_file is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(web.cert_file, web.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}.cert_file/key_file: {web.cert_file}: {exc}") from None
    if web.client_ca_file is not None:
        try:
            context.load_verify_locations(web.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{where}.client_ca_file: {web.client_ca_file}: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class WebServer(ThreadingHTTPServer):
    """The server: one provider, its settings, the streams it holds open."""

    daemon_threads = True
    request_queue_size = 16

    def __init__(self, web: WebSettings, provider: Provider, where: str = "web") -> None:
        assert web.listen is not None
        host, port = listen_address(web.listen, f"{where}.listen")
        self.provider = provider
        self.token = read_token(web.token_file, f"{where}.token_file") if web.token_file else None
        self.local_only = is_localhost(host) and self.token is None and not web.client_ca_file
        context = tls_context(web, where)
        self.scheme = "https" if context else "http"
        self.streams = threading.BoundedSemaphore(MAX_STREAMS)
        self.stopping = threading.Event()
        self.registry = registry(provider.metrics_collector())
        if ":" in host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host, port), Handler)
        except OSError as exc:
            raise ConfigError(f"{where}.listen: {web.listen}: {exc.strerror or exc}") from None
        if context is not None:
            # The handshake happens on the request's own thread (first read), not in accept.
            self.socket = context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), int(self.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{shown}:{port}/"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="web", daemon=True)
        self._thread.start()
        logger.info("web view on %s", self.url)

    def stop(self) -> None:
        """Stop serving and let go of the provider; a second call does nothing.

        Streams see ``stopping`` within a keep-alive period and end; they are daemon threads,
        never joined, so a stalled browser cannot hold the daemon up.
        """
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
        self.server_close()
        self.provider.close()


class Handler(BaseHTTPRequestHandler):
    server: WebServer
    server_version = "amr-gateway"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S

    # -- plumbing ------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        # Never the query string: it may hold the token.
        path = urlsplit(getattr(self, "path", "")).path[:200]  # none before a request line
        logger.debug("%s %s %s", self.address_string(), getattr(self, "command", None), path)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # every method but GET and HEAD: read-only
            return self._not_allowed
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's own errors (a malformed request line, headers too long): one
        plain line with our headers, not its HTML page."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # not parsed yet: answer with a status line
            self.request_version = "HTTP/1.0"
        status = HTTPStatus(code)
        text = f"{status.value} {message or status.phrase}\n"
        with contextlib.suppress(OSError):  # the client may be gone
            self._send_text(status, text, extra={"Connection": "close"})

    def _not_allowed(self) -> None:
        self._send_text(
            HTTPStatus.METHOD_NOT_ALLOWED,
            "read-only: GET and HEAD only\n",
            extra={"Allow": "GET, HEAD"},
        )

    def do_GET(self) -> None:
        self._handle(body=True)

    def do_HEAD(self) -> None:
        self._handle(body=False)

    def _headers(
        self,
        status: HTTPStatus,
        media: str,
        length: int | None,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def _send(
        self, status: HTTPStatus, media: str, body: bytes, extra: dict[str, str] | None = None
    ) -> None:
        self._headers(status, media, len(body), extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_text(
        self, status: HTTPStatus, text: str, extra: dict[str, str] | None = None
    ) -> None:
        self._send(status, "text/plain; charset=utf-8", text.encode(), extra)

    def _send_json(self, value: Any) -> None:
        body = (json.dumps(value, indent=2) + "\n").encode()
        self._send(HTTPStatus.OK, "application/json", body)

    # -- access ----------------------------------------------------------------------------------

    def _authorised(self, query: dict[str, str]) -> tuple[bool, bool]:
        """Return (allowed, whether to set the token cookie)."""
        token = self.server.token
        if token is None:
            return True, False
        offered = []
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            offered.append(header[7:].strip())
        try:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
            if COOKIE in cookie:
                offered.append(cookie[COOKIE].value)
        except CookieError:
            pass
        from_query = query.get("token")
        if from_query is not None:
            offered.append(from_query)
        ok = any(hmac.compare_digest(o.encode(), token.encode()) for o in offered)
        return ok, ok and from_query is not None

    def _host_allowed(self) -> bool:
        if not self.server.local_only:
            return True
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_localhost(name.strip("[]"))

    # -- routes ----------------------------------------------------------------------------------

    def _handle(self, *, body: bool) -> None:
        try:
            self._route()
        except HttpError as exc:
            self._send_text(exc.status, f"{exc}\n")
        except NotFound as exc:
            self._send_text(HTTPStatus.NOT_FOUND, f"{exc}\n")
        except NotReady as exc:
            self._send_text(HTTPStatus.SERVICE_UNAVAILABLE, f"{exc}\n", {"Retry-After": "2"})
        except ConfigError as exc:
            self._send_text(HTTPStatus.BAD_REQUEST, f"{exc}\n")
        except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError):
            self.close_connection = True
        except Exception:
            logger.exception("web: %s failed", urlsplit(self.path).path)
            try:
                self._send_text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (logged)\n")
            except OSError:
                self.close_connection = True

    def _route(self) -> None:
        parts = urlsplit(self.path)
        try:
            query = dict(
                parse_qsl(
                    parts.query, keep_blank_values=True, strict_parsing=False, max_num_fields=20
                )
            )
        except ValueError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"bad query: {exc}") from None
        path = parts.path
        if not self._host_allowed():
            raise HttpError(HTTPStatus.FORBIDDEN, "this view answers to localhost names only")
        allowed, set_cookie = self._authorised(query)
        if not allowed:
            self._send_text(
                HTTPStatus.UNAUTHORIZED,
                "a token is required\n",
                extra={"WWW-Authenticate": 'Bearer realm="amr-gateway"'},
            )
            return
        extra = {}
        if set_cookie:
            secure = "; Secure" if self.server.scheme == "https" else ""
            extra["Set-Cookie"] = (
                f"{COOKIE}={self.server.token}; Path=/; HttpOnly; SameSite=Strict{secure}"
            )
        provider = self.server.provider
        if path == "/":
            page = provider.front_page()
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", page.encode(), extra)
            return
        match = METER_PATH.fullmatch(path)
        if match:
            name = unquote(match.group(1))
            data = provider.meter(name)
            page = pages.meter_page(provider.title, data)
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", page.encode(), extra)
            return
        if path.startswith("/static/"):
            self._static(path.removeprefix("/static/"))
            return
        if path == "/events":
            self._events()
            return
        if path == "/metrics":
            self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))
            return
        if path == "/api/overview":
            self._send_json(provider.overview())
            return
        if path == "/api/status":
            self._send_json(provider.status())
            return
        if path == "/api/bill":
            self._send_json(provider.bill(query.get("period") or None, query.get("meter") or None))
            return
        match = API_METER_PATH.fullmatch(path)
        if match:
            name = unquote(match.group(1))
            if match.group(2) is None:
                self._send_json(provider.meter(name))
                return
            media, text = provider.download(name, match.group(2), query)
            filename = f"{name}-{match.group(2)}"
            disposition = f'attachment; filename="{re.sub(r"[^A-Za-z0-9_.-]", "_", filename)}"'
            self._send(
                HTTPStatus.OK,
                f"{media}; charset=utf-8",
                text.encode(),
                {"Content-Disposition": disposition},
            )
            return
        raise HttpError(HTTPStatus.NOT_FOUND, f"no page {path[:80]!r}")

    def _static(self, name: str) -> None:
        if name not in STATIC:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no file {name[:80]!r}")
        data = resources.files("gateway.web").joinpath("static", name).read_bytes()
        self._send(HTTPStatus.OK, STATIC[name], data)

    def _events(self) -> None:
        """Server-Sent Events: the overview at each new snapshot, a comment to keep alive."""
        if not self.server.streams.acquire(blocking=False):
            raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "too many open streams")
        try:
            self._headers(
                HTTPStatus.OK, "text/event-stream; charset=utf-8", None, {"Connection": "close"}
            )
            self.close_connection = True
            if self.command == "HEAD":
                return
            holder = self.server.provider.holder
            version = 0  # snapshots start at 1: the current one is sent at once
            while not self.server.stopping.is_set():
                snapshot = holder.wait_newer(version, KEEPALIVE_S)
                if snapshot is None:
                    self.wfile.write(b": keepalive\n\n")
                    self.wfile.flush()
                    continue
                version = snapshot.version
                data = json.dumps(self.server.provider.overview(), separators=(",", ":"))
                self.wfile.write(f"event: overview\nid: {version}\ndata: {data}\n\n".encode())
                self.wfile.flush()
        finally:
            self.server.streams.release()
