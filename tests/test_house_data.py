"""tflth.data: telling MNIST from Fashion-MNIST by content, data directories that hold no
dataset, and tfds datasets that are not prepared (no download attempt, nothing written)."""

import os
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tflth import data as data_lib
from tflth.data import DataError, sources

from test_data import write_idx

FASHION_DIR = data_lib.DEBIAN_FASHION_MNIST_DIR
has_fashion = pytest.mark.skipif(not os.path.isdir(FASHION_DIR),
                                 reason="Debian's dataset-fashion-mnist is not installed")

MNIST_TRAIN = (5, 0, 4, 1, 9, 2, 1, 3, 1, 4)
FASHION_TRAIN = (9, 0, 0, 3, 0, 2, 7, 2, 5, 5)


def tiny_idx_dir(directory, train_labels, test_labels=(1, 2, 3)):
    """Four raw IDX files: zero images and the given labels."""
    train_labels, test_labels = np.array(train_labels, np.uint8), np.array(test_labels, np.uint8)
    arrays = {"x_train": np.zeros((len(train_labels), 28, 28), np.uint8), "y_train": train_labels,
              "x_test": np.zeros((len(test_labels), 28, 28), np.uint8), "y_test": test_labels}
    for key, base in data_lib.IDX_FILES.items():
        write_idx(os.path.join(directory, base), arrays[key])
    return str(directory)


# ------------------------------------------------------------------ MNIST vs Fashion-MNIST


@has_fashion
def test_real_fashion_mnist_files_are_refused_as_mnist():
    with pytest.raises(DataError) as info:
        data_lib.load("mnist", data_dir=FASHION_DIR)
    message = str(info.value)
    assert "\n" not in message
    assert FASHION_DIR in message and "hold Fashion-MNIST, not mnist" in message, message
    assert "9 0 0 3 0 2 7 2 5 5" in message and "5 0 4 1 9 2 1 3 1 4" in message, message
    assert "'fashion_mnist'" in message, message


@has_fashion
def test_real_fashion_mnist_files_load_as_fashion_mnist():
    assert data_lib.load("fashion_mnist", data_dir=FASHION_DIR).num_train == 60_000


def test_tiny_fashion_labelled_idx_files_are_refused_as_mnist(tmp_path):
    where = tiny_idx_dir(tmp_path, FASHION_TRAIN + (1,))
    with pytest.raises(DataError, match=r"hold Fashion-MNIST, not mnist: their train labels begin "
                                        r"9 0 0 3 0 2 7 2 5 5, .* MNIST's begin 5 0 4 1 9 2 1 3 1 4"):
        data_lib.load("mnist", data_dir=where)
    assert data_lib.load("fashion_mnist", data_dir=where).num_train == 11


def test_tiny_mnist_labelled_idx_files_are_refused_as_fashion_mnist(tmp_path):
    where = tiny_idx_dir(tmp_path, MNIST_TRAIN)
    with pytest.raises(DataError, match=r"hold MNIST, not fashion_mnist: .*5 0 4 1 9 2 1 3 1 4.*"
                                        r"Fashion-MNIST's begin 9 0 0 3 0 2 7 2 5 5.*load these as 'mnist'"):
        data_lib.load("fashion_mnist", data_dir=where)
    assert data_lib.load("mnist", data_dir=where).num_train == 10


def test_labels_of_another_order_pass_and_npz_is_checked_too(tmp_path):
    where = tiny_idx_dir(tmp_path, (0, 1, 2, 3, 4, 5, 6, 7, 8, 9))  # neither dataset's order
    assert data_lib.load("mnist", data_dir=where).num_train == 10
    x = np.zeros((10, 28, 28), np.uint8)
    np.savez(tmp_path / "f.npz", x_train=x, y_train=np.array(FASHION_TRAIN), x_test=x[:2], y_test=np.arange(2))
    with pytest.raises(DataError, match="hold Fashion-MNIST, not mnist"):
        data_lib.load("mnist", data_dir=tmp_path / "f.npz")


# ------------------------------------------------------------------ directories without a dataset


def test_directory_without_idx_files_or_a_prepared_dataset_is_refused_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("not data")
    before = sorted(os.listdir(tmp_path))
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        data_lib.load("cifar10", data_dir=tmp_path)
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert "\n" not in message
    assert f"data_dir={tmp_path} is a directory holding notes.txt, not a dataset" in message, message
    assert "train-images-idx3-ubyte" in message and "'cifar10' prepared" in message, message
    assert "download_and_prepare()" in message, message
    assert sorted(os.listdir(tmp_path)) == before  # nothing downloaded or created


def test_missing_data_dir_is_refused_without_creating_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"data_dir=.*nowhere does not exist"):
        data_lib.load("mnist", data_dir=missing)
    assert not missing.exists()


def test_prepared_tfds_directory_is_still_a_source():
    with tfds.testing.mock_data(num_examples=6):
        ds = data_lib.load("mnist")
    assert ds.num_train == 6 and ds.source == "tfds mnist"


# ------------------------------------------------------------------ no network: fail at once


def test_unprepared_tfds_dataset_without_a_network_fails_fast_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path))  # tfds's default data directory
    asked = []

    def offline(name, timeout=5.0):
        asked.append(name)
        return "www.cs.toronto.edu:443: Name or service not known"

    monkeypatch.setattr(sources, "download_unreachable", offline)
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        data_lib.load("cifar10")
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert asked == ["cifar10"]
    assert "\n" not in message
    assert f"tfds cifar10 is not prepared in {tmp_path}" in message, message
    assert "Name or service not known" in message and "download_and_prepare()" in message, message
    assert os.listdir(tmp_path) == []


def test_download_probe_is_bounded_and_names_the_server(monkeypatch):
    monkeypatch.setitem(sources.TFDS_DOWNLOAD_SERVERS, "cifar10", ("tflth-test.invalid", 443))
    for key in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    start = time.monotonic()
    why = sources.download_unreachable("cifar10", timeout=2.0)
    assert time.monotonic() - start < 5
    assert why is not None and why.startswith("tflth-test.invalid:443"), why
    assert sources.download_unreachable("imagenet2012") is None  # no known server: tfds decides
