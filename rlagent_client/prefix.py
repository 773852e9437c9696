"""Prefix block hashes of a prompt: chained hashes of fixed-size chunks, so prompts that share a
prefix share their leading hashes, and the service can tell which replica likely caches them.

The scheme, to reproduce in any language:

* Split the prompt into chunks of `chunk_chars` Unicode code points (not bytes, not UTF-16 units)
  and drop a trailing partial chunk: a replica's KV cache holds only full blocks, so the tail is
  never reused and its hash would only add noise.
* ``h_0 = blake2b(8 zero bytes || utf8(chunk_0), digest_size=8)`` and
  ``h_i = blake2b(h_{i-1} || utf8(chunk_i), digest_size=8)`` (raw 8-byte digests chained, no key,
  no salt, no person); each hash is sent as 16 lowercase hex digits. At most `max_blocks`, the first.
* No normalisation: the text is hashed exactly as the model reads it.

A chat request is serialised before hashing, one message after another, each as
``"\\x1e" + role + "\\x1f" + content``: U+001E (record separator) starts a message and U+001F
(unit separator) ends its role. String content is used as is; OpenAI's list of parts becomes the
text of each `text` part, in order, and ``"\\x1d" + JSON`` for any other part (sorted keys,
separators "," and ":", non-ASCII kept), so two different images diverge. `None` content is "".
Other message fields (name, tool_calls) are not part of it.

Test vector: ``prefix_hashes("ab" * 300)`` with the defaults gives two hashes (the last 88 code
points are a partial chunk), ``["c6f122aeeaadbb37", "658be1e898527eab"]``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

DIGEST_BYTES = 8
CHUNK_CHARS = 256
MAX_BLOCKS = 512
_SEED = bytes(DIGEST_BYTES)
MESSAGE_START, ROLE_END, PART_MARK = "\x1e", "\x1f", "\x1d"


def prefix_hashes(prompt: str, *, chunk_chars: int = CHUNK_CHARS, max_blocks: int = MAX_BLOCKS) -> list[str]:
    """The chained hashes of the prompt's whole chunks, in order, at most `max_blocks` of them."""
    if chunk_chars < 1 or max_blocks < 0:
        raise ValueError(f"chunk_chars must be >= 1 and max_blocks >= 0, got {chunk_chars}, {max_blocks}")
    blocks = min(len(prompt) // chunk_chars, max_blocks)
    hashes, previous = [], _SEED
    for i in range(blocks):
        chunk = prompt[i * chunk_chars:(i + 1) * chunk_chars].encode("utf-8")
        previous = hashlib.blake2b(previous + chunk, digest_size=DIGEST_BYTES).digest()
        hashes.append(previous.hex())
    return hashes


def chat_prefix_hashes(messages: Iterable[Mapping[str, Any]], *, chunk_chars: int = CHUNK_CHARS,
                       max_blocks: int = MAX_BLOCKS) -> list[str]:
    """`prefix_hashes` of the canonical serialisation of OpenAI-style chat messages."""
    return prefix_hashes(serialise_chat(messages), chunk_chars=chunk_chars, max_blocks=max_blocks)


def serialise_chat(messages: Iterable[Mapping[str, Any]]) -> str:
    """The canonical text of a conversation (module docstring): a conversation that continues another
    serialises to that one's text followed by more, so it shares its leading hashes."""
    return "".join(f"{MESSAGE_START}{m.get('role', '')}{ROLE_END}{_content_text(m.get('content'))}"
                   for m in messages)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_part_text(part) for part in content)
    raise ValueError(f"content must be a string, a list of parts or null, got {type(content).__name__}")


def _part_text(part: Any) -> str:
    if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return part["text"]
    return PART_MARK + json.dumps(part, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
