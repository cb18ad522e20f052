"""vaelab: autoencoders (AE, VAE, β-VAE) on PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
