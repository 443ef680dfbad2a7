"""Dead-letter envelopes: the original bytes, why they were refused, and where they came from.

A person reading the topic sees the reason in words and the text of the message; a tool
can restore the exact original bytes from ``original_b64`` (which survives invalid UTF-8)
and find the source message by topic, partition and offset.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson

DEAD_LETTER_SCHEMA = "riskwatch.dead_letter.v1"
_PREVIEW_CHARS = 2000


def dead_letter(
    *,
    stage: str,
    code: str,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    original: bytes | None,
    item_index: int | None = None,
    item: Any = None,
    batch_index: int | None = None,
) -> bytes:
    """One JSON dead-letter message. For a rejected item, ``item`` holds just that item; for a
    report of a batch message, ``original`` is that report alone and ``batch_index`` its place."""
    envelope: dict[str, Any] = {
        "schema": DEAD_LETTER_SCHEMA,
        "stage": stage,
        "code": code,
        "reason": reason,
        "source": {"topic": topic, "partition": partition, "offset": offset, "key": _text(key)},
        "rejected_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    if batch_index is not None:
        envelope["batch_index"] = batch_index
    if item_index is not None:
        envelope["item_index"] = item_index
        envelope["item"] = item
    if original is not None:
        envelope["original_b64"] = base64.b64encode(original).decode("ascii")
        envelope["original_preview"] = original[:_PREVIEW_CHARS].decode("utf-8", errors="replace")
    return orjson.dumps(envelope, default=str)


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="replace")
