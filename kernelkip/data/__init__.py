"""Datasets and preprocessing: loaders for standard formats, class-balanced sampling, ZCA."""
# containers and loaders
from .loaders import (DATASET_NAMES, DEFAULT_SEARCH_DIRS, Dataset, load_cifar10, load_cifar100,
                      load_dataset, load_digits, load_idx, load_npz, load_svhn, read_idx)
# sampling
from .loaders import class_balanced_sample
# preprocessing
from .preprocess import layer_norm, one_hot_centered, standardize, zca

__all__ = ["Dataset", "DATASET_NAMES", "DEFAULT_SEARCH_DIRS", "load_dataset", "load_digits",
           "load_idx", "read_idx", "load_cifar10", "load_cifar100", "load_svhn", "load_npz",
           "class_balanced_sample", "standardize", "layer_norm", "zca", "one_hot_centered"]
