"""The `model` field of a multipart/form-data upload, found in the first bytes of the body as they arrive,
so that the rest (the audio or image file) streams on to the engine instead of being held whole.

OpenAI's clients send the form fields before the file, so the model is usually in the first few hundred
bytes; a form that puts it after the file is read up to it (within the route's body limit)."""

from __future__ import annotations

import re

_BOUNDARY = re.compile(rb'boundary="?([^";,]+)"?', re.IGNORECASE)
_NAME = re.compile(rb'\bname="([^"]*)"', re.IGNORECASE)
NEED_MORE = object()


def boundary_of(content_type: bytes) -> bytes | None:
    if not content_type.lower().startswith(b"multipart/form-data"):
        return None
    match = _BOUNDARY.search(content_type)
    return match.group(1).strip() if match else None


class FieldFinder:
    """Feed it the body's bytes in order (`feed`, then `find`); it remembers where the next part starts,
    so a long file before the field is scanned once."""

    def __init__(self, boundary: bytes, name: bytes = b"model") -> None:
        self.delimiter = b"--" + boundary
        self.name = name
        self.buffer = bytearray()
        self._next = -1  # where the next part's delimiter starts; -1: the first not found yet

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def find(self) -> str | None | object:
        """The field's value; None when the form ended without it; NEED_MORE when more bytes are needed."""
        buffer = self.buffer
        if self._next < 0:
            self._next = buffer.find(self.delimiter)
            if self._next < 0:
                return NEED_MORE
        while True:
            start = self._next + len(self.delimiter)
            if len(buffer) < start + 2:
                return NEED_MORE
            if buffer[start : start + 2] == b"--":
                return None  # the closing delimiter
            headers_end = buffer.find(b"\r\n\r\n", start)
            if headers_end < 0:
                return NEED_MORE
            body_start = headers_end + 4
            end = buffer.find(b"\r\n" + self.delimiter, body_start)
            if end < 0:
                return NEED_MORE
            match = _NAME.search(bytes(buffer[start:headers_end]))
            if match is not None and match.group(1) == self.name:
                return bytes(buffer[body_start:end]).decode("utf-8", errors="replace").strip()
            self._next = end + 2
