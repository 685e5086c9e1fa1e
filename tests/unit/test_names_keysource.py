"""Replica names (``balancer.names``) and routing-key sources (``balancer.http.keysource``)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

from balancer.errors import ConfigError
from balancer.http.keysource import KeySpec, RawKeyExtractor, parse_key_sources
from balancer.names import generate_name, initial_names, is_valid_name, server_id

# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Server 1",
        "Server 3fa91c",
        "S5",
        "S10",
        "web-3",
        "a",
        "A.b_c-d",
        "Server",
        "x" * 63,
        "Server " + "y" * 63,
        "9lives",
    ],
)
def test_valid_names(name: str) -> None:
    assert is_valid_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        "Server ",
        "Server  1",
        "server 1x y",
        "S 5",
        "-web",
        ".x",
        "_x",
        "x" * 64,
        "Server 1\n",
        "S5\n",
        "web/3",
        "wéb",
        "Server\t1",
        " S5",
        "S5 ",
        "Server Server 1",
    ],
)
def test_invalid_names(name: str) -> None:
    assert not is_valid_name(name)


@pytest.mark.parametrize("value", [None, 5, ["S5"], b"S5", {"S5": 1}])
def test_non_strings_are_invalid(value: object) -> None:
    assert not is_valid_name(value)


@pytest.mark.parametrize(
    ("name", "sid"),
    [
        ("Server 7", "7"),
        ("S5", "S5"),
        ("Server 3fa91c", "3fa91c"),
        ("Server", "Server"),
        ("web-3", "web-3"),
    ],
)
def test_server_id(name: str, sid: str) -> None:
    assert server_id(name) == sid
    assert " " not in server_id(name)


def test_initial_names() -> None:
    assert initial_names(3) == ["Server 1", "Server 2", "Server 3"]
    assert initial_names(0) == []


def test_generated_names_are_valid_single_token_ids() -> None:
    seen = set()
    for _ in range(200):
        name = generate_name(set())
        assert is_valid_name(name)
        assert name.startswith("Server ")
        sid = server_id(name)
        assert " " not in sid
        assert len(sid) == 6
        int(sid, 16)  # hex token
        seen.add(sid)
    assert len(seen) > 190  # 16**6 possibilities: collisions in 200 draws are rare


class TakenFirst:
    """A ``Collection`` that reports the first ``refuse`` ids it is asked about as taken."""

    def __init__(self, refuse: int) -> None:
        self.refuse = refuse
        self.asked: list[str] = []

    def __contains__(self, item: object) -> bool:
        assert isinstance(item, str)
        self.asked.append(item)
        return len(self.asked) <= self.refuse

    def __iter__(self) -> Iterator[str]:
        return iter(self.asked[: self.refuse])

    def __len__(self) -> int:
        return min(len(self.asked), self.refuse)


def test_generate_name_never_returns_a_taken_id() -> None:
    taken = TakenFirst(refuse=5)
    name = generate_name(taken)
    assert len(taken.asked) == 6  # it kept drawing until an id was free
    assert server_id(name) == taken.asked[-1]
    assert server_id(name) not in taken.asked[:5]


def test_generate_name_avoids_a_real_taken_set() -> None:
    taken = {server_id(generate_name(set())) for _ in range(50)}
    for _ in range(200):
        assert server_id(generate_name(taken)) not in taken


# --- key sources -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "specs"),
    [
        ("query:id,header:x-request-id", (("query", "id"), ("header", "x-request-id"))),
        ("ip", (("ip", ""),)),
        ("path", (("path", ""),)),
        ("cookie:session", (("cookie", "session"),)),
        (" query:id , ip ,, path ", (("query", "id"), ("ip", ""), ("path", ""))),
        ("header:a:b", (("header", "a:b"),)),  # only the first colon separates
        ("", ()),
        (" , ", ()),
    ],
)
def test_parse_key_sources_accepts(text: str, specs: tuple[KeySpec, ...]) -> None:
    assert parse_key_sources(text) == specs


@pytest.mark.parametrize(
    "text",
    [
        "query",
        "query:",
        "header",
        "cookie:",
        "ip:x",
        "path:/home",
        "bogus:x",
        "Query:id",
        "id",
        "query:id,nope",
    ],
)
def test_parse_key_sources_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="bad key source"):
        parse_key_sources(text)


class Req:
    """A request as the data path sees it: raw target, headers, peer address."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, peer: str = "") -> None:
        self.url = url.encode()
        self.headers = {k.lower().encode(): v.encode() for k, v in (headers or {}).items()}
        self.peer = peer


def extractor(text: str, seed: int = 0) -> Callable[[Req], str]:
    keys = RawKeyExtractor(parse_key_sources(text), random.Random(seed))

    def get(req: Req) -> str:
        # The data path captures only the headers the extractor asks for.
        captured = {k: v for k, v in req.headers.items() if k in keys.header_names}
        return keys.key(req.url, captured, req.peer)

    get.random_id = keys.random_id  # type: ignore[attr-defined]
    return get


def test_query_source() -> None:
    assert extractor("query:id")(Req("/home?id=4242&x=1")) == "4242"
    assert extractor("query:id")(Req("/home?xid=1&id=7")) == "7"  # not a suffix match
    assert extractor("query:id")(Req("/home?a=%20b&id=4%202")) == "4 2"  # percent-decoded
    assert extractor("query:id")(Req("/home?id=a+b")) == "a b"


def test_header_source_is_case_insensitive() -> None:
    assert extractor("header:X-Request-ID")(Req("/home", {"x-request-id": "abc-1"})) == "abc-1"


def test_cookie_source() -> None:
    req = Req("/home", {"Cookie": 'a=1; session="s-77"'})
    assert extractor("cookie:session")(req) == "s-77"


def test_ip_source() -> None:
    assert extractor("ip")(Req("/home", peer="10.1.2.3")) == "10.1.2.3"


def test_path_source() -> None:
    assert extractor("path")(Req("/a/b?id=3")) == "/a/b"
    assert extractor("path")(Req("/a%20b")) == "/a b"


def test_sources_are_tried_in_order() -> None:
    req = Req("/home?id=q", {"x-request-id": "h"})
    assert extractor("query:id,header:x-request-id")(req) == "q"
    assert extractor("header:x-request-id,query:id")(req) == "h"
    # A missing or empty value falls through to the next source.
    req = Req("/home?id=", {"x-request-id": "h"})
    assert extractor("query:id,header:x-request-id")(req) == "h"
    assert extractor("query:other,path")(req) == "/home"


def test_fallback_is_a_seeded_random_six_digit_id() -> None:
    reference = random.Random(99)
    expected = [str(reference.randint(100_000, 999_999)) for _ in range(20)]
    get_key = extractor("query:id,header:x-request-id,cookie:c,ip", seed=99)
    got = [get_key(Req("/home")) for _ in range(20)]  # no id, header, cookie or peer
    assert got == expected
    assert all(len(k) == 6 and k.isdecimal() for k in got)
    assert len(set(got)) > 15


def test_empty_source_list_always_falls_back() -> None:
    get_key = extractor("", seed=1)
    assert get_key(Req("/home?id=5")) == str(random.Random(1).randint(100_000, 999_999))
    assert 100_000 <= int(get_key.random_id()) <= 999_999  # type: ignore[attr-defined]
