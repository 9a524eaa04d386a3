"""Schemathesis hooks for labelq's API contract run (tests/contract/run.sh).

The document says an upload is "a JPEG or PNG image" and a cursor is "the `next_cursor` of a
previous page". JSON Schema cannot say either, so these hooks teach schemathesis to make them:
real images (decodable, 80..=1000 px a side, noise or flat colour) for the image media types,
which the form's `image` part uses too, and well-formed cursors for the `labelq-cursor` format.
Nothing here knows about particular test inputs; it only generates what the document describes.
"""

from __future__ import annotations

import base64
import io
import uuid

import schemathesis
from hypothesis import strategies as st
from PIL import Image

SIDES = st.integers(min_value=80, max_value=1000)


@st.composite
def pictures(draw: st.DrawFn) -> Image.Image:
    width, height = draw(SIDES), draw(SIDES)
    if draw(st.booleans()):
        colour = tuple(draw(st.integers(0, 255)) for _ in range(3))
        return Image.new("RGB", (width, height), colour)
    seed = draw(st.binary(min_size=width * height * 3 // 64, max_size=width * height * 3 // 64))
    tile = Image.frombytes("RGB", (width // 8, height // 8), seed[: (width // 8) * (height // 8) * 3])
    return tile.resize((width, height))


def encoded(kind: str) -> st.SearchStrategy[bytes]:
    def encode(picture: Image.Image) -> bytes:
        out = io.BytesIO()
        picture.save(out, format=kind)
        return out.getvalue()

    return pictures().map(encode)


schemathesis.openapi.media_type("image/png", encoded("PNG"))
schemathesis.openapi.media_type("image/jpeg", encoded("JPEG"))


@st.composite
def cursors(draw: st.DrawFn) -> str:
    """A position in a listing: creation time in epoch milliseconds and an image id."""
    millis = draw(st.integers(min_value=0, max_value=4_102_444_800_000))
    image_id = uuid.UUID(int=draw(st.integers(min_value=0, max_value=2**128 - 1)))
    raw = f"{millis}.{image_id}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


schemathesis.openapi.format("labelq-cursor", cursors())


@st.composite
def callback_urls(draw: st.DrawFn) -> str:
    """A callback URL the server accepts: https, a public name (never resolved at submission)."""
    host = draw(st.from_regex(r"[a-z][a-z0-9]{0,20}", fullmatch=True))
    path = draw(st.from_regex(r"[A-Za-z0-9_-]{0,30}", fullmatch=True))
    return f"https://{host}.example.com/hooks/{path}"


schemathesis.openapi.format("labelq-callback-url", callback_urls())
