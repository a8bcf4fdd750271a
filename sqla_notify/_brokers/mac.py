"""Authenticate a broker's payloads with a shared secret: HMAC-SHA256 tags, and a window of
payloads already seen.

A signed payload is ``"<tag>.<text>"``: the tag is the HMAC-SHA256, keyed with the secret,
of a *domain* (the broker and its channel: a payload signed for one channel is not valid on
another) and the exact text, in unpadded URL-safe base64 (43 characters). Tags are compared
in constant time. The text must be ASCII (every payload this package signs is), so that
nothing but the bytes that were signed can pass.

A tag proves that the payload was written by someone who holds the secret; it does not hide
the payload, and it cannot tell a payload from a copy of it sent again later. :class:`Seen`
remembers the most recent payloads' names, so that a copy of one of them is dropped.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence
from typing import Union

__all__ = ("SEEN", "TAG_LEN", "Secret", "Seen", "Signer", "untagged")

#: Characters a tag adds to a payload: 43 of base64 and a dot.
TAG_LEN = 44
#: The shortest secret accepted, in bytes. Whoever can read the payloads can try guesses
#: offline against their tags: a secret must not be guessable (``secrets.token_urlsafe(32)``).
MIN_SECRET = 16
#: Payloads remembered by :class:`Seen`.
SEEN = 10_000

#: A secret, or several (the first signs, every one is accepted: to change secrets).
Secret = Union[str, bytes, Sequence[Union[str, bytes]]]


class Signer:
    """Signs and checks payloads for one domain with a list of secrets."""

    __slots__ = ("_domain", "_keys")

    def __init__(self, secret: Secret, *, domain: str, owner: str) -> None:
        """:param owner: how to name the argument in errors, e.g. ``"PostgresBroker(secret=...)"``.
        :raises TypeError, ValueError: for anything but secrets of :data:`MIN_SECRET` bytes or more."""
        secrets = [secret] if isinstance(secret, (str, bytes)) else list(secret) if isinstance(secret, Sequence) else None
        if not secrets or not all(isinstance(s, (str, bytes)) for s in secrets):
            raise TypeError(f"{owner} expected a str or bytes (or a non-empty list of them), got {type(secret).__name__}")
        keys = [s.encode() if isinstance(s, str) else bytes(s) for s in secrets]
        for key in keys:
            if len(key) < MIN_SECRET:
                raise ValueError(
                    f"{owner} expected a secret of at least {MIN_SECRET} bytes, got one of {len(key)}: "
                    f"anyone who can read the payloads can try to guess it; use secrets.token_urlsafe(32)"
                )
        self._keys = keys
        self._domain = domain.encode() + b"\0"

    def _tag(self, key: bytes, text: bytes) -> bytes:
        return base64.urlsafe_b64encode(hmac.digest(key, self._domain + text, "sha256"))[:43]

    def sign(self, text: str) -> str:
        """``text`` (ASCII) with its tag, made with the first secret."""
        return f"{self._tag(self._keys[0], text.encode()).decode()}.{text}"

    def verify(self, payload: str) -> str | None:
        """The text of ``payload`` if its tag is valid for one of the secrets, else ``None``."""
        tag, dot, text = payload.partition(".")
        if not dot or len(tag) != 43 or not payload.isascii():
            return None
        given, signed = tag.encode(), text.encode()
        # Every secret is tried (their number is no secret): the time does not tell which matched.
        valid = False
        for key in self._keys:
            valid |= hmac.compare_digest(given, self._tag(key, signed))
        return text if valid else None


def untagged(payload: str) -> str:
    """``payload`` without a tag it may carry, unchecked (for a broker that has no secret)."""
    tag, dot, text = payload.partition(".")
    return text if dot and len(tag) == 43 and not payload.startswith("{") else payload


class Seen:
    """The names of the last ``size`` payloads: :meth:`add` tells whether one is a copy."""

    __slots__ = ("_names", "_size")

    def __init__(self, size: int = SEEN) -> None:
        self._size = size
        self._names: dict[str, None] = {}  # in insertion order: the oldest first

    def add(self, name: str) -> bool:
        """Remember ``name``; ``False`` if it was remembered already."""
        if name in self._names:
            return False
        self._names[name] = None
        if len(self._names) > self._size:
            del self._names[next(iter(self._names))]
        return True
