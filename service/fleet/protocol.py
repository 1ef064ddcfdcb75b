"""What the ingress and an engine replica pass each other through Ray: one HTTP exchange."""

from __future__ import annotations

from pydantic import BaseModel


class ForwardedRequest(BaseModel):
    """A client's HTTP request as the ingress received it, replayed on a replica's app."""

    method: str
    path: str
    query: bytes = b""
    headers: list[tuple[str, str]] = []
    body: bytes = b""
    client: tuple[str, int] | None = None


class ResponseHead(BaseModel):
    """The first item a replica streams back: the status line and headers, and which replica answers."""

    status: int
    headers: list[tuple[str, str]]
    replica: str

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)
