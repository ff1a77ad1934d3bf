"""Benchmarks shipped with the package (``openmatch-persistence bench``).

Each measures against baselines taken in the same run, on the same file
system, so the results are ratios that mean something on any machine.
"""
