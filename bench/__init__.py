"""`make bench`: every pitrdrill figure beside its baseline, measured in the same run.

`python -m bench.run` builds real PostgreSQL 15 labs, alternates baseline and pitrdrill runs
(ABAB) with the page cache put in the same state before each, and prints a table of
pitrdrill / baseline time ratios; the table is also written as JSON under bench/results/.
"""
