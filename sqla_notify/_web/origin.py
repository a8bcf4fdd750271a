"""The Origin check that stops cross-site WebSocket hijacking.

Browsers send ``Origin`` on every WebSocket handshake and on cross-origin requests, and CORS
does not apply to WebSockets: without a check, a page on any site can open the stream with
the user's cookies and read it. A request passes if it has no ``Origin`` (not a browser, so
no ambient cookies to abuse), if its ``Origin`` is the request's own origin (the scheme of
the connection and its ``Host`` header), or if it is on the application's allow-list.

One refinement: a page served over ``https`` may connect to the same host and port over
plain ``http``/``ws`` as the server sees it, which is what a proxy that terminates TLS
looks like. The reverse (an ``http`` page reaching an ``https`` server) is refused.

Runs once per connection, never per message.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

__all__ = ("OriginPolicy",)

_DEFAULT_PORT = {"http": 80, "https": 443}
# the scheme of a page that may use a connection of this scheme
_PAGE_SCHEME = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def _split_host(host: str, scheme: str) -> tuple[str, int] | None:
    """``"Example.com:8000"`` -> ``("example.com", 8000)``, with the scheme's default port."""
    host = host.lower()
    if host.startswith("["):  # IPv6 literal
        end = host.find("]")
        if end < 0:
            return None
        name, rest = host[: end + 1], host[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:]
    else:
        name, _, port_text = host.partition(":")
    if not name:
        return None
    if not port_text:
        return name, _DEFAULT_PORT[scheme]
    if not port_text.isdigit():
        return None
    return name, int(port_text)


def _parse(origin: str) -> tuple[str, str, int] | None:
    """``"https://Example.com"`` -> ``("https", "example.com", 443)``; ``None`` if it is not
    a serialized http(s) origin (``"null"``, a path, garbage)."""
    scheme, sep, rest = origin.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORT or not rest or any(c in rest for c in "/?#@ \t"):
        return None
    host = _split_host(rest, scheme)
    return None if host is None else (scheme, *host)


class OriginPolicy:
    """Decides whether a connection's ``Origin`` may use the stream.

    :param allowed: origins allowed besides the request's own: exact serialized origins
        (``"https://app.example.com"``, ``"http://localhost:5173"``); ``"null"`` allows the
        opaque origin of sandboxed frames and ``file:`` pages; ``"*"`` turns the check off.
    :raises ValueError: for an entry that is not an origin.
    """

    __slots__ = ("any", "allowed", "null")

    def __init__(self, allowed: Collection[str]) -> None:
        if isinstance(allowed, str):
            raise TypeError(f"allowed_origins expected a collection of origins, got a str: {allowed!r}")
        self.any = "*" in allowed
        self.null = "null" in allowed
        parsed = set()
        for entry in allowed:
            if entry in ("*", "null"):
                continue
            origin = _parse(entry) if isinstance(entry, str) else None
            if origin is None:
                raise ValueError(
                    f"allowed_origins expected origins like 'https://app.example.com' "
                    f"(scheme://host[:port], no path, no trailing slash), '*' or 'null', got {entry!r}"
                )
            parsed.add(origin)
        self.allowed = frozenset(parsed)

    def refuses(self, scope: Any) -> str | None:
        """The offending ``Origin`` if this connection must be refused, else ``None``."""
        origins: list[bytes] = [v for k, v in scope["headers"] if k == b"origin"]
        if not origins or self.any:
            return None  # no Origin: not a browser
        raw = origins[0].decode("latin-1")
        if len(origins) > 1:
            return raw
        if raw == "null":
            return None if self.null else raw
        origin = _parse(raw)
        if origin is None:
            return raw
        if origin in self.allowed:
            return None
        own_scheme = _PAGE_SCHEME.get(scope.get("scheme", ""), "")
        host: bytes | None = next((v for k, v in scope["headers"] if k == b"host"), None)
        if host is None or own_scheme not in _DEFAULT_PORT:
            return raw
        own = _split_host(host.decode("latin-1"), own_scheme)
        scheme, name, port = origin
        if own is None or own[0] != name:
            return raw
        if scheme == own_scheme and own[1] == port:
            return None
        # An https page, and a connection that arrived unencrypted: TLS ended at a proxy.
        host_has_port = b":" in host.rsplit(b"]", 1)[-1]
        if scheme == "https" and own_scheme == "http" and (not host_has_port or own[1] == port):
            return None
        return raw
