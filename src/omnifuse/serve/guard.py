"""The ASGI layer in front of every route: the bearer token and the request body limit.

The token is read from `Authorization: Bearer T`, or from the HttpOnly cookie that opening
the page once as `/?token=T` sets (a browser cannot send a header with `<img src>`); only
`/health` is open. A body larger than the limit is refused by its Content-Length, or, sent
without one, as soon as more than the limit has arrived.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from fastapi import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "omnifuse_token"
OPEN_PATHS = frozenset({"/health"})
UNAUTHORIZED = (
    "missing or wrong token: send the header 'Authorization: Bearer TOKEN' "
    "(in a browser, open /?token=TOKEN once)"
)


class BodyTooLarge(HTTPException):
    """Raised from inside the body stream; an HTTPException so that FastAPI's form parsing
    passes it on as it is (413) rather than as a parse error."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is too large: more than {limit:,} bytes")


class Guard:
    """Token check and body limit around an ASGI app."""

    def __init__(self, app: ASGIApp, *, token: str | None, body_bytes: int) -> None:
        self.app = app
        self.token = token
        self.body_bytes = body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.token is not None and scope["path"] not in OPEN_PATHS:
            login = self.login_token(scope)
            if login is not None and self.matches(login):  # /?token=T: set the cookie, drop T
                await redirect_with_cookie(send, login)
                return
            if not self.authorized(scope):
                await reply(send, 401, UNAUTHORIZED, [(b"www-authenticate", b"Bearer")])
                return
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.body_bytes:
            await reply(send, 413, BodyTooLarge(self.body_bytes).detail)
            return
        await self.app(scope, self.counting(receive), send)

    def matches(self, given: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(given.encode(), self.token.encode())

    def authorized(self, scope: Scope) -> bool:
        bearer = header(scope, b"authorization") or ""
        scheme, _, value = bearer.partition(" ")
        if scheme.lower() == "bearer" and self.matches(value.strip()):
            return True
        try:
            cookies = SimpleCookie(header(scope, b"cookie") or "")
        except CookieError:
            return False
        return COOKIE in cookies and self.matches(cookies[COOKIE].value)

    @staticmethod
    def login_token(scope: Scope) -> str | None:
        if scope["path"] != "/" or scope["method"] != "GET":
            return None
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        return values[0] if values else None

    def counting(self, receive: Receive) -> Receive:
        """`receive`, raising BodyTooLarge once the body passes the limit."""
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.body_bytes:
                    raise BodyTooLarge(self.body_bytes)
            return message

        return limited


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def reply(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def redirect_with_cookie(send: Send, token: str) -> None:
    cookie = SimpleCookie()
    cookie[COOKIE] = token
    cookie[COOKIE]["httponly"] = True
    cookie[COOKIE]["samesite"] = "Strict"
    cookie[COOKIE]["path"] = "/"
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", b"/"),
                (b"content-length", b"0"),
                (b"set-cookie", cookie[COOKIE].OutputString().encode("latin-1")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
