"""The open-vocabulary benchmark: stages, baselines and the results table.

:func:`ovdet.ovbench.run.run_synthetic_benchmark` runs it; :mod:`~ovdet.ovbench.plan` says what
it trains and which rows it reports; :mod:`~ovdet.ovbench.stages`, :mod:`~ovdet.ovbench.schedule`,
:mod:`~ovdet.ovbench.targets`, :mod:`~ovdet.ovbench.report` and :mod:`~ovdet.ovbench.resume`
are its parts.
"""
