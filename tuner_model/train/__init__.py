"""Training: the one loop (loop.py), what a step computes (objective.py: the grid path of grid.py or the
dense path), and the fits built on them (fit.py, batched.py, qat.py). Decoding a blob imports none of it."""

from tuner_model.train.fit import FitOptions, FitProgress, FitResult, fit, fit_image

__all__ = ["FitOptions", "FitProgress", "FitResult", "fit", "fit_image"]
