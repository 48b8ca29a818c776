"""`agent-rl analyze`: what a training run changed and how it learned.

Pure computations (`sparsity`, `phases`, `two_phase`, `compute_curve`, `passk_curves`), the
readers of a run directory (`weights`, `run_dir`), and the writer of the report (`report`).
Nothing here runs at import time; torch and matplotlib are imported where they are needed.
"""
