"""The estimators' model files: one schema per estimator on the container of ``_io``."""
