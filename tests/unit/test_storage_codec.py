"""How stored values become objects: decode_all for lists."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import orjson

from apiserver.storage import codec


def test_decode_all_stamps_each_row_with_its_revision() -> None:
    rows = [(7, b'{"metadata":{"name":"a"}}'), (9, b'{"kind":"X"}')]
    assert codec.decode_all(rows) == [
        {"metadata": {"name": "a", "resourceVersion": "7"}},
        {"kind": "X", "metadata": {"resourceVersion": "9"}},
    ]


def test_decode_all_gives_fresh_objects_each_time() -> None:
    rows = [(2, orjson.dumps({"metadata": {"name": "a"}, "data": {"k": "v"}}))]
    first, second = codec.decode_all(rows), codec.decode_all(rows)
    first[0]["data"]["k"] = "changed"
    assert second[0]["data"] == {"k": "v"}


def test_decode_all_leaves_the_gc_as_it_found_it() -> None:
    assert gc.isenabled()
    codec.decode_all([(2, b"{}")])
    assert gc.isenabled()
    gc.disable()
    try:
        codec.decode_all([(2, b"{}")])
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_decodes_turn_the_gc_back_on_only_when_the_last_ends() -> None:
    inside, release = threading.Event(), threading.Event()

    def rows() -> Iterator[tuple[int, bytes]]:
        inside.set()
        release.wait(10)
        yield 2, b"{}"

    other = threading.Thread(target=codec.decode_all, args=(rows(),))
    other.start()
    assert inside.wait(10)
    codec.decode_all([(3, b"{}")])
    assert not gc.isenabled()  # the other decode is still running
    release.set()
    other.join(10)
    assert gc.isenabled()


def test_a_pause_leaves_nothing_frozen() -> None:
    codec.decode_all([(2, b'{"metadata":{}}')])
    assert gc.get_freeze_count() == 0


def test_a_pause_leaves_what_the_process_froze_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        codec.decode_all([(2, b'{"metadata":{}}')])
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
