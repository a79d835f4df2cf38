"""Tiny ImageNet (200 classes, 64x64 JPEGs) as a tensorflow-datasets builder over a manual folder.

tensorflow-datasets has no builder for it. This one reads the standard
``tiny-imagenet-200`` folder (as unpacked from ``tiny-imagenet-200.zip``) from
tfds's manual directory, without any download:

    tiny-imagenet-200/wnids.txt                       one WordNet id per line: the 200 classes
    tiny-imagenet-200/train/<wnid>/images/*.JPEG      500 training images per class
    tiny-imagenet-200/val/images/*.JPEG               10,000 validation images
    tiny-imagenet-200/val/val_annotations.txt         file name, wnid, box (tab-separated)

Splits: ``train`` (100,000) and ``validation`` (10,000; the paper's test set,
the test split having no labels). Images keep their JPEG bytes, so the ImageNet
preprocessing (crop windows decoded from the JPEG) applies unchanged.
"""

from __future__ import annotations

from typing import ClassVar

import tensorflow_datasets as tfds
from etils import epath

FOLDER = "tiny-imagenet-200"


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
    """The ``tiny-imagenet-200`` folder in the manual directory, as ``train`` and ``validation``."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar = {"1.0.0": "train and validation splits of tiny-imagenet-200."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Unpack tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip) into "
        f"the manual directory, so that it holds {FOLDER}/wnids.txt, {FOLDER}/train and "
        f"{FOLDER}/val; pass it as config.manual_dir (default: <data_dir>/downloads/manual)."
    )
    code_path = epath.Path(__file__)  # As for the digits: no package-resource probing.

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Tiny ImageNet: 200 ImageNet classes at 64x64 (Stanford CS231n).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(num_classes=200),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        root = epath.Path(dl_manager.manual_dir) / FOLDER
        wnids_file = root / "wnids.txt"
        if not wnids_file.exists():
            raise FileNotFoundError(f"{wnids_file} not found. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        wnids = [line.strip() for line in wnids_file.read_text().splitlines() if line.strip()]
        if len(wnids) != 200:
            raise ValueError(f"{wnids_file} lists {len(wnids)} classes; expected 200")
        labels = {wnid: index for index, wnid in enumerate(wnids)}
        return {
            "train": self._generate_examples(self._train_files(root / "train", labels)),
            "validation": self._generate_examples(self._validation_files(root / "val", labels)),
        }

    def _generate_examples(self, files):
        for path, label in files:
            yield path.name, {"image": path, "label": label, "file_name": path.name}

    @staticmethod
    def _train_files(folder: epath.Path, labels: dict[str, int]):
        for wnid, label in labels.items():
            for path in sorted((folder / wnid / "images").glob("*.JPEG")):
                yield path, label

    @staticmethod
    def _validation_files(folder: epath.Path, labels: dict[str, int]):
        for line in (folder / "val_annotations.txt").read_text().splitlines():
            if line.strip():
                name, wnid = line.split("\t")[:2]
                yield folder / "images" / name, labels[wnid]
