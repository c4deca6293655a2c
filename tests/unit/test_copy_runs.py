"""The restore copies a backup's files in runs of consecutive files: every file exactly once,
in order, no run over its limits unless one file alone is."""

from hypothesis import given, strategies as st

from adapters.base_copy import RUN_BYTES, RUN_FILES, copy_runs


@given(st.lists(st.integers(min_value=0, max_value=3 * RUN_BYTES), max_size=400))
def test_runs_cover_every_file_once_in_order_within_their_limits(sizes):
    runs = copy_runs(sizes)
    assert [index for run in runs for index in run] == list(range(len(sizes)))
    for run in runs:
        assert len(run) <= RUN_FILES
        assert len(run) == 1 or sum(sizes[index] for index in run) <= RUN_BYTES


def test_a_thousand_small_files_make_few_runs():
    assert len(copy_runs([8192] * 1271)) == 20  # ceil(1271 / 64)
