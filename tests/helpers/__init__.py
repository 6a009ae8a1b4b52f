"""Helpers shared by tests and benchmarks (engines, not fixtures): independent truth
(``truth``, real products' ``realworld``), reading child processes' lines (``lines``), the
ops bench (``ops_bench``), the SQS fleet (``fleet``) and the chaos soak (``chaos``).
``tests/<name>.py`` of the moved modules stay as aliases for older imports."""
