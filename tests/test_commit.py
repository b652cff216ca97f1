"""The ledger: commits are contiguous, never pass a held offset, and in scrape mode never pass
an event that no completed scrape covered."""

from __future__ import annotations

import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.pipeline.ledger import OffsetLedger

P0 = ("t", 0)
P1 = ("t", 1)


def _pending(ledger: OffsetLedger) -> dict[tuple[str, int], int]:
    return {(tp.topic, tp.partition): tp.offset for tp in ledger.pending()}


def test_record_mode_commits_what_is_processed_and_not_held() -> None:
    ledger = OffsetLedger("record")
    ledger.assign([P0, P1])
    assert _pending(ledger) == {}
    ledger.hold(P0, 4)
    ledger.hold(P0, 7)
    ledger.advance(P0, 20, recorded=18, last_recorded=19)
    ledger.advance(P1, 5, recorded=5, last_recorded=4)
    assert _pending(ledger) == {P0: 4, P1: 5}
    ledger.release(P0, 4)
    assert _pending(ledger) == {P0: 7, P1: 5}
    ledger.release(P0, 7)
    assert _pending(ledger) == {P0: 20, P1: 5}


def test_scrape_mode_commits_only_what_a_completed_scrape_covered() -> None:
    ledger = OffsetLedger("scrape")
    ledger.assign([P0])
    ledger.advance(P0, 10, recorded=10, last_recorded=9)
    assert _pending(ledger) == {}
    snap = ledger.snapshot()
    ledger.advance(P0, 15, recorded=5, last_recorded=14)  # recorded after the snapshot
    assert _pending(ledger) == {}  # the scrape has not been written yet
    ledger.cover(snap)
    assert _pending(ledger) == {P0: 10}
    ledger.cover(ledger.snapshot())
    assert _pending(ledger) == {P0: 15}


def test_an_abandoned_scrape_covers_nothing() -> None:
    ledger = OffsetLedger("scrape")
    ledger.assign([P0])
    ledger.advance(P0, 10, recorded=10, last_recorded=9)
    ledger.snapshot()  # the response was never completed: cover() is not called
    assert _pending(ledger) == {}
    assert ledger.unscraped()[0] == 10


def test_dead_lettered_tail_needs_no_scrape_but_its_acknowledgement() -> None:
    ledger = OffsetLedger("scrape")
    ledger.assign([P0])
    ledger.advance(P0, 10, recorded=10, last_recorded=9)
    ledger.cover(ledger.snapshot())
    for offset in (10, 11, 12):
        ledger.hold(P0, offset)
    ledger.advance(P0, 13)  # only dead letters after the scrape
    assert _pending(ledger) == {P0: 10}
    for offset in (10, 11, 12):
        ledger.release(P0, offset)
    assert _pending(ledger) == {P0: 13}


def test_a_held_dead_letter_limits_a_covered_partition() -> None:
    ledger = OffsetLedger("scrape")
    ledger.assign([P0])
    ledger.hold(P0, 3)
    ledger.advance(P0, 10, recorded=9, last_recorded=9)
    ledger.cover(ledger.snapshot())
    assert _pending(ledger) == {P0: 3}
    assert ledger.unscraped()[0] == 0
    ledger.release(P0, 3)
    assert _pending(ledger) == {P0: 10}


def test_committed_positions_are_not_pending_again_and_never_go_back() -> None:
    ledger = OffsetLedger("record")
    ledger.assign([P0])
    ledger.advance(P0, 10, recorded=10, last_recorded=9)
    ledger.mark_committed(ledger.pending())
    assert _pending(ledger) == {}
    ledger.advance(P0, 5)  # an older position never moves it back
    assert _pending(ledger) == {}
    state = ledger.states()[P0]
    assert (state.processed, state.recorded, state.committable, state.committed) == (10, 10, 10, 10)


def test_revoked_partitions_are_forgotten_and_late_scrapes_ignored() -> None:
    ledger = OffsetLedger("scrape")
    ledger.assign([P0])
    ledger.advance(P0, 3, recorded=3, last_recorded=2)
    snap = ledger.snapshot()
    ledger.revoke([P0])
    ledger.assign([P0])  # back again, from whatever was committed
    ledger.cover(snap)  # a scrape that started under the old ownership
    assert ledger.states()[P0].covered == -1
    ledger.revoke([P0])
    ledger.advance(P0, 9)
    ledger.hold(P0, 1)
    assert _pending(ledger) == {}
    assert not ledger.is_held(P0)


def test_unscraped_events_are_counted_with_their_age_until_covered() -> None:
    ledger = OffsetLedger("scrape")
    ledger.assign([P0, P1])
    ledger.advance(P0, 100, recorded=90, last_recorded=99)
    time.sleep(0.05)
    ledger.advance(P1, 10, recorded=10, last_recorded=9)
    count, age = ledger.unscraped()
    assert count == 100
    assert age >= 0.05
    ledger.cover(ledger.snapshot())
    assert ledger.unscraped()[0] == 0
    states = ledger.states()
    assert states[P0].unscraped_events == 0
    assert states[P0].oldest_unscraped_s == 0.0


def test_wait_covered_wakes_on_a_scrape_and_times_out_without_one() -> None:
    ledger = OffsetLedger("scrape")
    ledger.assign([P0, P1])
    ledger.advance(P0, 5, recorded=5, last_recorded=4)
    assert ledger.wait_covered([P1], 0.01)  # nothing recorded there: nothing to wait for
    assert not ledger.wait_covered([P0], 0.05)
    scraper = threading.Timer(0.1, lambda: ledger.cover(ledger.snapshot()))
    scraper.start()
    started = time.monotonic()
    assert ledger.wait_covered([P0], 5.0)
    assert time.monotonic() - started < 2.0
    scraper.join()


# A model-based property: any interleaving of the worker's and the scraper's calls.
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("batch"), st.lists(st.sampled_from(["ok", "bad"]), max_size=6)),
        st.tuples(st.just("ack"), st.integers(0, 50)),
        st.tuples(st.just("snapshot"), st.none()),
        st.tuples(st.just("cover"), st.integers(0, 5)),
        st.tuples(st.just("commit"), st.none()),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_commits_never_pass_an_event_neither_scraped_nor_acknowledged(
    ops: list[tuple[str, object]],
) -> None:
    ledger = OffsetLedger("scrape")
    ledger.assign([P0])
    recorded: set[int] = set()  # offsets recorded into the meters
    held: set[int] = set()  # dead letters not yet acknowledged
    scraped: set[int] = set()  # recorded offsets some completed scrape included
    snapshots: list[tuple[object, set[int]]] = []
    next_offset = 0
    committed = -1
    for op, arg in ops:
        if op == "batch" and arg:
            n_rec, last = 0, -1
            for kind in arg:
                if kind == "ok":
                    recorded.add(next_offset)
                    n_rec, last = n_rec + 1, next_offset
                else:
                    held.add(next_offset)
                    ledger.hold(P0, next_offset)
                next_offset += 1
            ledger.advance(P0, next_offset, n_rec, last)
        elif op == "ack" and held:
            offset = sorted(held)[arg % len(held)]
            held.discard(offset)
            ledger.release(P0, offset)
        elif op == "snapshot":
            snapshots.append((ledger.snapshot(), set(recorded)))
        elif op == "cover" and snapshots:
            snap, seen = snapshots.pop(arg % len(snapshots))
            ledger.cover(snap)  # type: ignore[arg-type]
            scraped |= seen
        elif op == "commit":
            pending = ledger.pending()
            if pending:
                assert pending[0].offset > committed  # commits only move forward
                committed = pending[0].offset
                ledger.mark_committed(pending)
        # Safety: everything before the committable position is scraped or acknowledged.
        position = ledger.states()[P0].committable
        for offset in range(max(position, 0)):
            assert offset not in held
            assert offset not in recorded or offset in scraped
    # Liveness: once every dead letter is acknowledged and a scrape completes, all is committable.
    for offset in list(held):
        ledger.release(P0, offset)
    ledger.cover(ledger.snapshot())
    assert ledger.states()[P0].committable == (next_offset if next_offset else -1)
