"""Training: the one loop (loop.py), what a step computes (objective.py: the grid path of grid.py or the
dense path), and the fits built on them (fit.py, batched.py, qat.py). Decoding a blob imports none of it.
Import from the modules (`tuner_model.train.fit`): this package exports nothing, so that no name here
shadows a module."""
