"""Shared fixtures: where the real data lives, and small synthetic folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--data-dir", default=None,
                     help="folder holding rsna-100px/ and rsna-fullres/ (default: $BONEAGE_DATA "
                          "or ../shared/data beside the repository)")


@pytest.fixture(scope="session")
def data_dir(request) -> Path:
    """The real-data folder; tests using it skip when it is absent."""
    opt = request.config.getoption("--data-dir") or os.environ.get("BONEAGE_DATA")
    path = Path(opt) if opt else REPO.parent / "shared" / "data"
    if not (path / "rsna-100px" / "labels.csv").is_file():
        pytest.skip(f"real RSNA data not found at {path} (set BONEAGE_DATA or --data-dir)")
    return path


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory) -> Path:
    """A labels.csv + images/ folder of 60 synthetic radiographs at 64 px."""
    from boneage.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "set", 60, size=64, seed=3)


@pytest.fixture(scope="session")
def tiny_model(synthetic_folder, tmp_path_factory) -> Path:
    """A small model trained for two epochs on synthetic images (fast, not accurate)."""
    from boneage.config import Recipe
    from boneage.engine import fit

    recipe = Recipe.from_dict({
        "name": "tiny", "data": {"root": str(synthetic_folder), "val_fraction": 0.2},
        "preprocess": [{"name": "resize", "size": 32}],
        "model": {"name": "small_cnn", "options": {"width": 4, "stages": 3}},
        "train": {"epochs": 2, "batch_size": 16, "device": "cpu"},
    })
    return fit(recipe, tmp_path_factory.mktemp("tiny"), progress=False, log=lambda *_: None).model_path


@pytest.fixture
def cli(capsys):
    """Run the ``boneage`` CLI in-process: ``cli("predict", path, ...) -> (code, stdout, stderr)``."""
    from boneage.cli.main import main

    def run(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _hand_built_dicom(path, stored, photometric="MONOCHROME2", bits_stored=16, **tags):
    """Write a minimal Part 10 file with pydicom directly (no boneage code involved);
    ``stored=None`` leaves the pixel data out."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    if stored is not None:
        ds.set_pixel_data(np.asarray(stored), photometric, bits_stored)
    else:
        ds.SOPInstanceUID = generate_uid()
        ds.Rows, ds.Columns = 32, 32
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="session")
def hand_built_dicom():
    """``hand_built_dicom(path, stored, photometric, bits_stored, **tags) -> path``: a DICOM
    file written by pydicom alone, to test our reader against files we did not write."""
    return _hand_built_dicom
