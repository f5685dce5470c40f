"""OpenAI chat messages as the router reads them: the text of a message, its image parts, the
latest turn of a role.

One home for these helpers because the classifier, the thinking budget and the request plan all
read the same client-supplied lists, and each must treat a malformed message the same way: as no
text, never as an error (validating messages is the API layer's and the engine's job). Pure
Python, no imports from the rest of the package.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

TEXT_PART_TYPES: frozenset[str] = frozenset({"text", "input_text"})
IMAGE_PART_TYPES: frozenset[str] = frozenset({"image_url", "input_image", "image"})


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or its text parts joined by newlines (so two
    parts never glue into one word). Image, audio and malformed parts are skipped; a part without
    a ``type`` counts as text, as OpenAI's SDKs send it."""
    if isinstance(content, str):
        return content
    if not isinstance(content, Sequence) or isinstance(content, (str, bytes)):
        return ""
    texts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping) and part.get("type", "text") in TEXT_PART_TYPES:
            value = part.get("text")
            if isinstance(value, str):
                texts.append(value)
    return "\n".join(texts)


def message_text(message: Any) -> str:
    """Text of one OpenAI chat message ("" for anything that is not a message mapping)."""
    return content_text(message.get("content")) if isinstance(message, Mapping) else ""


def message_role(message: Any) -> str | None:
    """The message's role, or None when it has none (or is not a mapping)."""
    role = message.get("role") if isinstance(message, Mapping) else None
    return role if isinstance(role, str) else None


def has_image_parts(message: Any) -> bool:
    """True when the message carries at least one image content part."""
    content = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(content, Sequence) or isinstance(content, (str, bytes)):
        return False
    return any(isinstance(p, Mapping) and p.get("type") in IMAGE_PART_TYPES for p in content)


def has_images(messages: Any) -> bool:
    """Vision is decided by content: any image part in any message."""
    return isinstance(messages, list) and any(has_image_parts(m) for m in messages)


def turns(messages: Any) -> list[tuple[str | None, str]]:
    """(role, text) of every mapping in a message list; [] for anything that is not a list."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        return []
    return [(message_role(m), message_text(m)) for m in messages if isinstance(m, Mapping)]


def iter_latest_texts(messages: Any, roles: Iterable[str]) -> Iterator[str]:
    """Texts of the turns with one of ``roles``, newest first, computed one turn at a time (a
    caller that stops at the first match reads no older turn)."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        return
    wanted = frozenset(roles)
    for message in reversed(messages):
        if isinstance(message, Mapping) and message_role(message) in wanted:
            yield message_text(message)
