"""The ledger: commits are contiguous and never pass a held (unacknowledged) offset."""

from __future__ import annotations

from consumer.commit import OffsetLedger

P0 = ("t", 0)
P1 = ("t", 1)


def _pending(ledger: OffsetLedger) -> dict[tuple[str, int], int]:
    return {(tp.topic, tp.partition): tp.offset for tp in ledger.pending()}


def test_nothing_pending_until_processed() -> None:
    ledger = OffsetLedger()
    ledger.assign([P0, P1])
    assert _pending(ledger) == {}
    ledger.advance(P0, 10)
    assert _pending(ledger) == {P0: 10}


def test_a_held_offset_stops_the_partition_until_released() -> None:
    ledger = OffsetLedger()
    ledger.assign([P0, P1])
    ledger.hold(P0, 4)
    ledger.hold(P0, 7)
    ledger.advance(P0, 20)
    ledger.advance(P1, 5)
    assert _pending(ledger) == {P0: 4, P1: 5}
    ledger.release(P0, 4)
    assert _pending(ledger) == {P0: 7, P1: 5}
    ledger.release(P0, 7)
    assert _pending(ledger) == {P0: 20, P1: 5}


def test_committed_positions_are_not_pending_again_and_never_go_back() -> None:
    ledger = OffsetLedger()
    ledger.assign([P0])
    ledger.advance(P0, 10)
    ledger.mark_committed(ledger.pending())
    assert _pending(ledger) == {}
    ledger.advance(P0, 5)  # an older position never moves it back
    assert _pending(ledger) == {}
    assert ledger.positions() == {P0: (10, 10, 10)}


def test_revoked_partitions_are_forgotten_and_ignored() -> None:
    ledger = OffsetLedger()
    ledger.assign([P0])
    ledger.advance(P0, 3)
    ledger.revoke([P0])
    ledger.advance(P0, 9)
    ledger.hold(P0, 1)
    assert _pending(ledger) == {}
    assert not ledger.is_held(P0)
