"""Label readers, datasets, splits and the synthetic radiograph generator."""

from boneage.data.labels import LabelRow, Sample, load_samples, read_labels
from boneage.data.split import train_val_split

__all__ = ["LabelRow", "Sample", "load_samples", "read_labels", "train_val_split"]
