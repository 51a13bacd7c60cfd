"""Benchmarks for sessionkeeper: ``make bench`` (``python -m bench``), ``--quick`` for a smoke run.

Each benchmark is a :class:`~bench.report.Section` listed in :data:`bench.__main__.SECTIONS`; a new
one (framework peers, stores, cross-process throughput, memory per session) is a module with a
``SECTION`` that returns tables and PASS/FAIL verdicts, added to that list.
"""
