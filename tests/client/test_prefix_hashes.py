"""Prefix block hashes: prompts that share a prefix share their leading hashes, and the scheme is the
one the client's README documents (its test vectors)."""

from __future__ import annotations

import hashlib
import json
import urllib.request

import pytest

from rlagent_client.prefix import chat_prefix_hashes, prefix_hashes, serialise_chat
from tests.client.conftest import answer, select_answer

SYSTEM = {"role": "system", "content": "You answer in French. " * 30}


def test_the_documented_test_vectors_hold():
    assert prefix_hashes("ab" * 300) == ["c6f122aeeaadbb37", "658be1e898527eab"]
    chat = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "x" * 600}]
    assert chat_prefix_hashes(chat) == ["77a5077f0f181173", "44472b8a8a1c8311"]


def test_each_hash_chains_the_previous_digest_and_the_chunk_as_documented():
    prompt = "é" * 4 + "z" * 4  # multibyte code points: chunks are code points, hashed as UTF-8
    previous, expected = bytes(8), []
    for chunk in ("éééé", "zzzz"):
        previous = hashlib.blake2b(previous + chunk.encode(), digest_size=8).digest()
        expected.append(previous.hex())
    assert prefix_hashes(prompt, chunk_chars=4) == expected


def test_prompts_sharing_a_prefix_share_the_leading_hashes_and_diverge_at_the_first_different_chunk():
    shared = "s" * 1000
    a, b = prefix_hashes(shared + "a" * 600), prefix_hashes(shared + "b" * 600)
    # 1000 shared characters are 3 whole chunks of 256; the 4th chunk mixes shared and different text.
    assert a[:3] == b[:3]
    assert all(x != y for x, y in zip(a[3:], b[3:], strict=True))
    assert len(a) == len(b) == 6


def test_a_difference_in_an_early_chunk_changes_every_later_hash():
    a = prefix_hashes("x" * 1024)
    b = prefix_hashes("y" + "x" * 1023)
    assert all(x != y for x, y in zip(a, b, strict=True))


def test_only_whole_chunks_are_hashed():
    assert prefix_hashes("") == []
    assert prefix_hashes("a" * 255) == []
    assert len(prefix_hashes("a" * 256)) == 1
    assert prefix_hashes("a" * 511) == prefix_hashes("a" * 256)


def test_unicode_is_chunked_by_code_point_and_a_different_character_diverges():
    text = "日本語のテキスト🙂" * 100
    hashes = prefix_hashes(text, chunk_chars=64)
    assert len(hashes) == len(text) // 64
    changed = prefix_hashes(text[:100] + "!" + text[101:], chunk_chars=64)
    assert changed[0] == hashes[0] and changed[1] != hashes[1]  # code point 100 is in the 2nd chunk
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in hashes)


def test_at_most_max_blocks_are_returned_and_they_are_the_first():
    full = prefix_hashes("q" * 256 * 20)
    assert prefix_hashes("q" * 256 * 20, max_blocks=5) == full[:5]
    assert prefix_hashes("q" * 256 * 20, max_blocks=0) == []
    assert len(prefix_hashes("q" * 256 * 600)) == 512  # the default bound


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        prefix_hashes("abc", chunk_chars=0)


def test_a_conversation_that_continues_another_shares_its_hashes():
    first = [SYSTEM, {"role": "user", "content": "Bonjour? " * 40}]
    longer = [*first, {"role": "assistant", "content": "Oui. " * 80},
              {"role": "user", "content": "Et? " * 90}]
    short, long = chat_prefix_hashes(first), chat_prefix_hashes(longer)
    assert len(long) > len(short) and long[:len(short)] == short


def test_the_chat_serialisation_is_stable_and_role_sensitive():
    user = [{"role": "user", "content": "hello " * 100}]
    assert serialise_chat(user) == "\x1euser\x1f" + "hello " * 100
    assert chat_prefix_hashes(user) == chat_prefix_hashes([{"content": "hello " * 100, "role": "user"}])
    system = [{"role": "system", "content": "hello " * 100}]
    assert chat_prefix_hashes(user)[0] != chat_prefix_hashes(system)[0]
    # A message boundary is not text: splitting one message in two changes the chunk it falls in.
    split = [{"role": "user", "content": "hello " * 50}, {"role": "user", "content": "hello " * 50}]
    assert chat_prefix_hashes(split)[0] == chat_prefix_hashes(user)[0]  # the first 256 characters agree
    assert chat_prefix_hashes(split)[1] != chat_prefix_hashes(user)[1]


def test_a_list_of_text_parts_hashes_as_the_same_string_and_other_parts_count():
    as_string = [{"role": "user", "content": "look at this " * 30}]
    as_parts = [{"role": "user", "content": [{"type": "text", "text": "look at this " * 15},
                                             {"type": "text", "text": "look at this " * 15}]}]
    assert chat_prefix_hashes(as_parts) == chat_prefix_hashes(as_string)

    def with_image(url: str) -> list[dict]:
        return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": "describe " * 60}]}]

    assert chat_prefix_hashes(with_image("a.png")) == chat_prefix_hashes(with_image("a.png"))
    assert chat_prefix_hashes(with_image("a.png"))[0] != chat_prefix_hashes(with_image("b.png"))[0]


def test_null_content_is_empty_and_other_content_is_refused():
    assert serialise_chat([{"role": "assistant", "content": None}]) == "\x1eassistant\x1f"
    with pytest.raises(ValueError):
        serialise_chat([{"role": "user", "content": 42}])


def test_the_example_gateway_hashes_chat_messages_and_names_its_replicas(dummy, make_client):
    from examples.fake_replica import FakeReplica, ReplicaProfile
    from examples.gateway import Gateway, _chat_hashes

    messages = [SYSTEM, {"role": "user", "content": "Quelle heure est-il?"}]
    body = json.dumps({"model": "demo", "messages": messages, "max_tokens": 4}).encode()
    assert _chat_hashes(body) == chat_prefix_hashes(messages) and _chat_hashes(body)
    assert _chat_hashes(b"not json") == [] and _chat_hashes(b'{"messages": "nope"}') == []

    dummy.behave(answer(200, {**select_answer(0), "replica_name": "gpu-a"}))
    replica = FakeReplica(ReplicaProfile("gpu-a"), seed=0).start()
    client = make_client(dummy.url, report=False)
    gateway = Gateway([replica.url], client, names=["gpu-a"]).start()
    try:
        request = urllib.request.Request(gateway.url + "/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            assert resp.status == 200 and resp.headers["X-Decided-By"] == "service"
    finally:
        gateway.stop()
        replica.stop()
    sent = dummy.bodies[-1]
    assert [r["name"] for r in sent["replicas"]] == ["gpu-a"]
    assert sent["request"]["prefix_hashes"] == chat_prefix_hashes(messages)
