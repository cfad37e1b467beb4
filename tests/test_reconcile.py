"""Which lost chunks the reconciler re-sends: a plain function."""

from digitscan.worker.reconcile import choose_chunks


def test_chunks_not_done_are_resent():
    assert choose_chunks(range(5), done={0, 2}, requeues={}, max_requeues=3) == ([1, 3, 4], [])


def test_a_chunk_resent_max_requeues_times_is_given_up():
    resend, given_up = choose_chunks([0, 1, 2], done={0}, requeues={1: 3, 2: 2}, max_requeues=3)
    assert (resend, given_up) == ([2], [1])


def test_nothing_to_do_when_all_are_done():
    assert choose_chunks([0, 1], done={0, 1}, requeues={0: 9}, max_requeues=1) == ([], [])
