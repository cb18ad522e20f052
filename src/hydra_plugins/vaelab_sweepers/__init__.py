"""vaelab's Hydra plugins. Hydra finds plugins only in the ``hydra_plugins`` namespace package, so vaelab's sweeper
lives here (its logic is vaelab's: :mod:`hydra_plugins.vaelab_sweepers.optuna_sweep`)."""
