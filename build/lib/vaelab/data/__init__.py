"""Data: one DataModule layer (base), the tensor-resident batch loader, and the data sets."""

from vaelab.data.base import ImageDataModule
from vaelab.data.digits import DigitsDataModule
from vaelab.data.image_folder import ImageFolderDataModule
from vaelab.data.loaders import ShardSampler, TensorBatchLoader
from vaelab.data.shapes import ShapesDataModule
from vaelab.data.torchvision_sets import FashionMNISTDataModule, MNISTDataModule

__all__ = ["DigitsDataModule", "FashionMNISTDataModule", "ImageDataModule", "ImageFolderDataModule", "MNISTDataModule",
           "ShapesDataModule", "ShardSampler", "TensorBatchLoader"]
