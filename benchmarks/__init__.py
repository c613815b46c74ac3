"""The performance harness: real processes on loopback, measured against ceilings in the same run.

Run it with ``python -m benchmarks`` (or ``make bench``); see ``benchmarks/README.md``.
"""
