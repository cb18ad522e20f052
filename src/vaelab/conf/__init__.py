"""The Hydra configs shipped with vaelab (config groups: model, data, trainer, callbacks, logger, ...)."""
