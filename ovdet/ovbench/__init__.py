"""The synthetic open-vocabulary benchmark: stages, baselines and the results table."""
