"""Benchmarks of webinar-chat against the targets of docs/performance-targets.md.

`python -m bench.run_all [--quick]` runs every benchmark (server and load generator in separate
processes, pinned to different cores) and writes docs/benchmarks.md with PNG plots in
docs/benchmarks/. Not collected by pytest (testpaths = tests): timings are never asserted.
"""
