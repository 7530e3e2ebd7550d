"""The worker's check for samples offsets the faust consumer skipped (OffsetTrack)."""

from __future__ import annotations

from streams.matching.support import OffsetTrack


def test_a_skipped_offset_is_due_for_a_seek_until_it_arrives() -> None:
    track = OffsetTrack()
    for offset in (671, 672, 901, 903, 904):  # 673..900 and 902 never came
        track.saw(3, offset)
    assert track.missing[3] == set(range(673, 901)) | {902}
    assert track.due(now=10.0) == [(3, 673)]
    assert track.due(now=10.5) == []  # a seek takes a fetch to land
    for offset in range(673, 905):  # the seek read them again (and some twice)
        track.saw(3, offset)
    assert track.missing == {}
    assert track.due(now=12.0) == []
    assert track.next_offset[3] == 905


def test_a_partition_that_never_fills_its_gap_is_given_up() -> None:
    track = OffsetTrack()
    track.saw(0, 10)
    track.saw(0, 20)
    seeks = [track.due(now=float(t)) for t in range(8)]
    assert seeks[:5] == [[(0, 11)]] * 5
    assert seeks[5:] == [[], [], []]  # given up after max_tries, with an error logged
    assert track.missing == {}


def test_offsets_in_order_leave_nothing_missing() -> None:
    track = OffsetTrack()
    for offset in range(100):
        track.saw(1, offset)
        track.saw(2, offset)
    assert track.missing == {} and track.due(now=0.0) == []


def test_a_jump_past_max_gap_is_an_offset_reset_not_a_skip() -> None:
    track = OffsetTrack()
    track.saw(4, 5)
    track.saw(4, 5 + 1 + track.max_gap + 1)  # logged as an error, nothing held for it
    assert track.missing == {} and track.next_offset[4] == 5 + track.max_gap + 3


def test_a_skipped_first_message_is_seen_against_where_the_seek_started() -> None:
    track = OffsetTrack()
    track.started(2, 40)  # the committed offset the consumer sought to
    track.saw(2, 41)  # 40 never came: with no start known this looked like a first read
    assert track.missing[2] == {40}
    assert track.hold(2) == 40 and track.hold(5) is None
    assert track.due(now=1.0) == [(2, 40)]
    track.saw(2, 40)
    assert track.hold(2) is None and track.missing == {}


def test_a_seek_to_committed_offsets_reads_the_missing_ones_again() -> None:
    track = OffsetTrack()
    track.saw(1, 10)
    track.saw(1, 13)
    assert track.hold(1) == 11
    track.started(1, 11)  # a rebalance sought back to the commit, which the hold kept at 11
    assert track.missing == {} and track.next_offset[1] == 11
    track.saw(1, 11)
    assert track.missing == {}
