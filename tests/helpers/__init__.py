"""Helpers shared by the tests (and the benchmarks): independent truth (``truth``, real
products' ``realworld``), reading child processes' lines (``lines``) and the ops bench
(``ops_bench``). ``tests/<name>.py`` stay as aliases of these modules for older imports."""
