"""Training code for the models sjd-batch ships (data generators, checkers, training loops, model cards).

Nothing on the runtime path (the worker, the runner, `load_model`) imports this package.
"""
