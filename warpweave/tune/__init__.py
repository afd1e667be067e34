"""Autotuning: measured search over the schedule space, a tuning database, model-guided
search, and schedules predicted for shapes never measured.

`records` (schedules as JSON, device identity, trials), `database` (SQLite, one row per
trial), `measure` (candidate artifacts and the worker process that runs them),
`executors` (local workers, Dask), `features`, `strategies`, `simulate` (replaying a
recorded sweep), `predict` (unseen shapes) and `session` (the search loop). Nothing here
imports the pipeline: callers inject how a candidate compiles.
"""
