"""Estimators over a data set: likelihood bounds (``likelihood``), active units (``active_units``) and
disentanglement scores (``disentanglement``, pure numpy; ``factors``, a model's scores on a DataModule with
ground-truth factors, for training and evaluation alike). Import the module you need; this package imports nothing
itself, so the model can use ``active_units`` (a leaf that needs only torch) without loading the rest."""
