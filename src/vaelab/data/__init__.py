"""Data: one DataModule layer (base), the tensor-resident batch loader, and the data sets."""

from vaelab.data.base import ImageDataModule
from vaelab.data.celeba import CelebADataModule
from vaelab.data.cifar import CIFAR10DataModule
from vaelab.data.digits import DigitsDataModule
from vaelab.data.dsprites import DSpritesDataModule
from vaelab.data.image_folder import ImageFolderDataModule
from vaelab.data.loaders import ShardSampler, TensorBatchLoader
from vaelab.data.omniglot import OmniglotDataModule
from vaelab.data.shapes import ColorShapesDataModule, ShapesDataModule
from vaelab.data.shapes3d import Shapes3DDataModule
from vaelab.data.svhn import SVHNDataModule
from vaelab.data.torchvision_sets import FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "CIFAR10DataModule", "CelebADataModule", "ColorShapesDataModule", "DSpritesDataModule", "DigitsDataModule",
    "FashionMNISTDataModule", "ImageDataModule", "ImageFolderDataModule", "MNISTDataModule",
    "OmniglotDataModule", "SVHNDataModule", "ShapesDataModule", "Shapes3DDataModule", "ShardSampler",
    "TensorBatchLoader"
]
