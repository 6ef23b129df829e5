"""Packet numbers to indices, with no process and no socket."""

from __future__ import annotations

from heron_remote.com.sequence import PacketSequence


def test_numbers_in_order_are_the_index() -> None:
    seq = PacketSequence()
    assert [seq.advance(n) for n in (1, 2, 3)] == [1, 2, 3]
    assert (seq.lost, seq.renumbered) == (0, 0)


def test_a_gap_is_kept_in_the_index_and_counted_as_lost() -> None:
    seq = PacketSequence()
    assert [seq.advance(n) for n in (1, 2, 5, 6)] == [1, 2, 5, 6]
    assert seq.lost == 2


def test_a_worker_numbering_from_1_again_continues_the_index() -> None:
    seq = PacketSequence()
    for n in (1, 2, 3):
        seq.advance(n)
    assert [seq.advance(n) for n in (1, 2)] == [4, 5]
    assert (seq.lost, seq.renumbered) == (0, 1)


def test_a_new_worker_goes_on_skipping_one_index_so_that_subscribers_see_the_restart() -> None:
    seq = PacketSequence()
    for n in (1, 2, 3, 4):
        seq.advance(n)
    seq.new_worker()
    assert [seq.advance(n) for n in (1, 2)] == [6, 7]  # 5 marks the restart
    assert (seq.lost, seq.renumbered, seq.skipped) == (0, 0, 1)
    seq.new_worker()
    assert seq.advance(3) == 11  # 8 skipped; the new worker's first two never arrived
    assert (seq.lost, seq.skipped) == (2, 2)
