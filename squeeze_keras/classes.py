"""Class names of CIFAR-10 and CIFAR-100, in label order, and CIFAR-100's fine-to-coarse map.

Label ids are the official ones: the sorted class-folder names of an image
folder give the same order (both datasets name their classes alphabetically).
No Keras or TensorFlow here, so the command line can use it without loading them.
"""

from __future__ import annotations

import numpy as np

CIFAR10 = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

# The 100 fine classes (CIFAR-100's `fine_label_names`).
CIFAR100_FINE = (
    'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle', 'bicycle',
    'bottle', 'bowl', 'boy', 'bridge', 'bus', 'butterfly', 'camel', 'can', 'castle',
    'caterpillar', 'cattle', 'chair', 'chimpanzee', 'clock', 'cloud', 'cockroach', 'couch',
    'crab', 'crocodile', 'cup', 'dinosaur', 'dolphin', 'elephant', 'flatfish', 'forest', 'fox',
    'girl', 'hamster', 'house', 'kangaroo', 'keyboard', 'lamp', 'lawn_mower', 'leopard', 'lion',
    'lizard', 'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain', 'mouse', 'mushroom',
    'oak_tree', 'orange', 'orchid', 'otter', 'palm_tree', 'pear', 'pickup_truck', 'pine_tree',
    'plain', 'plate', 'poppy', 'porcupine', 'possum', 'rabbit', 'raccoon', 'ray', 'road',
    'rocket', 'rose', 'sea', 'seal', 'shark', 'shrew', 'skunk', 'skyscraper', 'snail', 'snake',
    'spider', 'squirrel', 'streetcar', 'sunflower', 'sweet_pepper', 'table', 'tank',
    'telephone', 'television', 'tiger', 'tractor', 'train', 'trout', 'tulip', 'turtle',
    'wardrobe', 'whale', 'willow_tree', 'wolf', 'woman', 'worm',
)

# The 20 superclasses (CIFAR-100's `coarse_label_names`).
CIFAR100_COARSE = (
    'aquatic_mammals', 'fish', 'flowers', 'food_containers', 'fruit_and_vegetables',
    'household_electrical_devices', 'household_furniture', 'insects', 'large_carnivores',
    'large_man-made_outdoor_things', 'large_natural_outdoor_scenes',
    'large_omnivores_and_herbivores', 'medium_mammals', 'non-insect_invertebrates', 'people',
    'reptiles', 'small_mammals', 'trees', 'vehicles_1', 'vehicles_2',
)

# CIFAR100_FINE_TO_COARSE[fine label] is that class's coarse label.
CIFAR100_FINE_TO_COARSE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13,
    15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4,
    17, 4, 2, 0, 17, 4, 18, 17, 10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13,
    15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)


def class_names(dataset: str) -> tuple[str, ...]:
    """The class names of `"cifar10"` or `"cifar100"` (fine), in label order.

    Raises:
        ValueError: for another dataset name.
    """
    names = {"cifar10": CIFAR10, "cifar100": CIFAR100_FINE}
    if dataset not in names:
        raise ValueError(f"`dataset` must be one of {sorted(names)}. Received: dataset={dataset!r}")
    return names[dataset]


def coarse_labels(fine_labels) -> np.ndarray:
    """CIFAR-100 coarse (superclass) labels of an array of fine labels.

    Args:
        fine_labels: integer array of fine labels in [0, 100).

    Returns:
        An int64 array of the same shape with labels in [0, 20).
    """
    fine = np.asarray(fine_labels)
    if fine.size and (fine.min() < 0 or fine.max() >= len(CIFAR100_FINE)):
        raise ValueError(f"Fine labels must be in [0, {len(CIFAR100_FINE)}). "
                         f"Received labels from {fine.min()} to {fine.max()}.")
    return np.asarray(CIFAR100_FINE_TO_COARSE, np.int64)[fine]
