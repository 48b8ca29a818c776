"""Evaluation: the pass@k estimator, SWE-bench predictions, reports and the eval driver."""
