"""Callbacks that control a run, one job each: checkpoints (``checkpoint``), the random state for exact resume
(``rng_state``), stopping at the first non-finite value (``divergence``), progress output (``progress``), the
record of each epoch (``epoch_record``), the results card at the end (``summary``), the data's config in every
checkpoint (``data_config``), and the score callbacks (``scores`` and its representation, sample-quality and
disentanglement scores). The TensorBoard views are :mod:`vaelab.dashboard`'s."""
