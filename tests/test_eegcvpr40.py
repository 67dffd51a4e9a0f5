"""EEGCVPR40 on its real paths: every valid trial length, and the ImageNet stimulus photos beside the EEG."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from eegsine.data import load_eeg
from eegsine.errors import DataMissingError, UserError
from test_data_eeg import SPLITS, make_cvpr

# T=455 and T=450 are valid (450 <= T <= 600) but shorter than the 20:460 window; T=601 is dropped
SHORT_TRIALS = [(500, 0, 1, 0), (455, 1, 1, 1), (450, 1, 2, 1), (601, 0, 2, 0), (550, 0, 2, 2), (600, 1, 1, 3)]
NAMES = ["n02951358_1", "n03452741_2", "n02951358_3", "n03452741_4"]


def write_stimuli(root, names=NAMES, flat=(), size=(40, 30)):
    """JPEGs as in ImageNet's train folders (<wnid>/<name>.JPEG), or flat for names in ``flat``; pixel value
    encodes the image index so the pairing is checkable after the resize."""
    for k, name in enumerate(names):
        folder = root if name in flat else root / name.split("_")[0]
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (40 * k + 20, 200 - 40 * k, 128)).save(folder / f"{name}.JPEG", quality=95)
    return root


def test_trials_shorter_than_the_window_are_kept_and_edge_padded(tmp_path):
    root = make_cvpr(tmp_path / "cvpr", trials=SHORT_TRIALS)
    ds = load_eeg("eegcvpr40", root=str(root), bandpass=None)
    assert ds.x.shape == (5, 128, 440)                                   # only T=601 dropped
    assert ds.info["dropped_trials"] == 1 and ds.info["padded_trials"] == 2
    # trial of T=455: samples 20..454 as stored, then its last sample repeated for 5 samples
    t455 = ds.x[1, 5]
    np.testing.assert_array_equal(t455[:435], 5020.0 + np.arange(435))
    np.testing.assert_array_equal(t455[435:], np.full(5, 5454.0))
    np.testing.assert_array_equal(ds.x[2, 5, -10:], np.full(10, 5449.0))  # T=450: 10 padded samples
    np.testing.assert_array_equal(ds.x[0, 5, -1], 5459.0)                # a long trial is cut, not padded
    # the same trials band-passed (the default) load too: the filter runs on the whole trial, then the window
    assert load_eeg("eegcvpr40", root=str(root)).x.shape == (5, 128, 440)
    # subject filter and LOSO see the short trials as well
    assert load_eeg("eegcvpr40", root=str(root), bandpass=None, subject=2).x.shape == (2, 128, 440)
    loso = load_eeg("eegcvpr40", root=str(root), bandpass=None, loso_subject=1)
    assert len(loso.splits["test"]) == 3 and set(loso.subject[loso.splits["test"]].tolist()) == {1}


def test_stimulus_images_in_imagenet_and_flat_layouts_are_paired_by_name(tmp_path):
    root = make_cvpr(tmp_path / "cvpr", trials=SHORT_TRIALS, splits=SPLITS)
    imgs = write_stimuli(tmp_path / "stimuli", flat=("n03452741_4",))
    ds = load_eeg("eegcvpr40", root=str(root), bandpass=None, images_root=str(imgs), image_size=16)
    assert ds.images.shape == (4, 3, 16, 16) and ds.images.dtype == np.float32
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
    for k in range(4):  # the pixel colour written for image k comes back at index k (JPEG rounding aside)
        np.testing.assert_allclose(ds.images[k, :, 8, 8] * 255, [40 * k + 20, 200 - 40 * k, 128], atol=4)
    np.testing.assert_array_equal(ds.image_labels, [0, 1, 0, 1])
    assert ds.info["image_size"] == 16 and ds.info["unused_images"] == 0


def test_stimulus_transform_resizes_the_shorter_side_and_centre_crops(tmp_path):
    from eegsine.data.eegcvpr40 import stimulus_transform

    im = np.zeros((30, 90, 3), np.uint8)  # 90 wide, 30 high: left third red, middle green, right third blue
    im[:, :30, 0], im[:, 30:60, 1], im[:, 60:, 2] = 255, 255, 255
    Image.fromarray(im).save(tmp_path / "wide.png")
    out = stimulus_transform(tmp_path / "wide.png", 12)
    assert out.shape == (3, 12, 12)
    np.testing.assert_allclose(out[:, 6, 6], [0.0, 1.0, 0.0], atol=0.02)  # the centre crop is the green third


def test_missing_and_unreadable_stimuli_are_named_and_counted(tmp_path):
    root = make_cvpr(tmp_path / "cvpr", trials=SHORT_TRIALS)
    imgs = write_stimuli(tmp_path / "stimuli", names=NAMES[:2])
    with pytest.raises(DataMissingError, match=r"2 of 4 stimulus images not found .*first: n02951358_3") as info:
        load_eeg("eegcvpr40", root=str(root), images_root=str(imgs))
    assert "\n" not in str(info.value)
    with pytest.raises(DataMissingError, match="not a folder"):
        load_eeg("eegcvpr40", root=str(root), images_root=str(tmp_path / "nowhere"))
    write_stimuli(imgs)
    (imgs / "n02951358" / "n02951358_3.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="n02951358_3.JPEG: not a readable image"):
        load_eeg("eegcvpr40", root=str(root), images_root=str(imgs))
    with pytest.raises(UserError, match="image_size=4"):
        load_eeg("eegcvpr40", root=str(root), images_root=str(imgs), image_size=4)
