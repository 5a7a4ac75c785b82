"""The CUCUMBER-9 reader and writer on tiny files in the true format, and on the real sample."""

import os
import pickle
import pickletools
import shutil
import tarfile

import numpy as np
import pytest

from imgrade.core.errors import ConfigError, DataError
from imgrade.data.cucumber9 import DEFAULT_GRADE_ORDER, is_cucumber9, read_cucumber9
from imgrade.data.cucumber9_writer import write_cucumber9, write_tar_gz
from imgrade.data.safe_pickle import safe_load_pickle

P1_NAMES = ["2L", "BM", "BL", "M", "S", "L", "2S", "BS", "C"]  # as published: label 1 = BM, 5 = L
P2_NAMES = ["OTHER", "2L", "L", "M", "S", "2S", "BD", "BC", "BS", "C"]
SAMPLE_COUNTS = {"2L": 32, "BM": 30, "BL": 28, "M": 32, "S": 23, "L": 24, "2S": 26, "BS": 25, "C": 28}


def random_images(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def globals_in(data: bytes) -> set[str]:
    return {str(arg) for op, arg, _ in pickletools.genops(data) if op.name in ("GLOBAL", "STACK_GLOBAL")}


@pytest.fixture
def p1_folder(tmp_path):
    """Six 4x4 prototype-1 images in two data batches and a test_batch of two."""
    images = random_images(6, 4, 4, 3)
    labels = np.array([1, 5, 0, 8, 2, 1])
    folder = write_cucumber9(
        tmp_path / "cucumber-9-python", images, labels, P1_NAMES, num_batches=2, test_fraction=1 / 3
    )
    return folder, images, labels


# --- the written format ----------------------------------------------------------------------


def test_writer_puts_one_colour_plane_per_row(tmp_path):
    images = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
    folder = write_cucumber9(tmp_path / "c", images, np.array([0, 1]), P1_NAMES, num_batches=1)
    batch = pickle.loads((folder / "data_batch_1").read_bytes(), encoding="latin1")
    # by hand: image 0's R plane is pixels (0,0),(0,1),(1,0),(1,1) channel 0 = 0, 3, 6, 9
    expected = np.array(
        [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11], [12, 15, 18, 21], [13, 16, 19, 22], [14, 17, 20, 23]], np.uint8
    )
    np.testing.assert_array_equal(batch["data"], expected)
    assert batch["labels"] == [0, 1] and batch["batch_label"] == "training batch 1 of 1"
    meta = pickle.loads((folder / "batches.meta").read_bytes(), encoding="latin1")
    assert meta == {"label_names": P1_NAMES, "num_cases_per_batch": 2, "num_vis": 12}


def test_written_files_load_with_plain_pickle_as_bytes_too(p1_folder):
    folder, images, _ = p1_folder
    batch = pickle.loads((folder / "data_batch_1").read_bytes(), encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].shape == (6, 16)


def test_written_files_name_only_the_globals_of_the_published_files(p1_folder):
    folder, _, _ = p1_folder
    assert globals_in((folder / "data_batch_1").read_bytes()) == {
        "numpy.core.multiarray _reconstruct",
        "numpy ndarray",
        "numpy dtype",
    }
    assert globals_in((folder / "batches.meta").read_bytes()) == set()


def test_rewriting_a_folder_removes_batches_it_no_longer_has(tmp_path):
    images, labels = random_images(4, 2, 2, 3), np.zeros(4, int)
    folder = write_cucumber9(tmp_path / "c", images, labels, P1_NAMES, num_batches=3, test_fraction=0.25)
    write_cucumber9(folder, images, labels, P1_NAMES, num_batches=2)
    assert sorted(p.name for p in folder.iterdir()) == ["batches.meta", "data_batch_1", "data_batch_2"]


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"prototype": 3}, ConfigError),
        ({"test_fraction": 1.0}, ConfigError),
        ({"num_batches": 9}, ConfigError),
        ({"labels": np.array([0, 9])}, DataError),
        ({"images": np.zeros((2, 2, 3, 3), np.uint8)}, DataError),
        ({"images": np.zeros((2, 2, 2, 3), np.float32)}, DataError),
    ],
)
def test_writer_rejects_bad_arguments(tmp_path, kwargs, error):
    args = {"images": np.zeros((2, 2, 2, 3), np.uint8), "labels": np.array([0, 1]), "label_names": P1_NAMES, **kwargs}
    with pytest.raises(error):
        write_cucumber9(tmp_path / "c", **args)


# --- reading ---------------------------------------------------------------------------------


def test_round_trip_keeps_pixels_and_maps_labels_by_name(p1_folder):
    folder, images, labels = p1_folder
    result = read_cucumber9(folder)
    np.testing.assert_array_equal(result.images, images)
    # label 1 = BM (grade 6), 5 = L (1), 0 = 2L (0), 8 = C (8), 2 = BL (5)
    np.testing.assert_array_equal(result.targets, np.array([6, 1, 0, 8, 5, 6], np.float32))
    assert result.targets.dtype == np.float32 and result.images.dtype == np.uint8
    assert result.grade_names == list(DEFAULT_GRADE_ORDER)
    assert result.ids == [
        "data_batch_1:0",
        "data_batch_1:1",
        "data_batch_2:0",
        "data_batch_2:1",
        "test_batch:0",
        "test_batch:1",
    ]
    assert result.split.tolist() == ["", "", "", "", "test", "test"]
    assert result.groups is None and result.dropped == {}
    assert result.source == f"CUCUMBER-9 prototype 1 (folder {folder})"


def test_parent_folder_and_meta_file_work_too(p1_folder):
    folder, images, _ = p1_folder
    for path in (folder.parent, folder / "batches.meta"):
        np.testing.assert_array_equal(read_cucumber9(path).images, images)


def test_batches_come_in_natural_order_and_split_is_none_without_test_batch(tmp_path):
    images = random_images(11, 2, 2, 3)
    labels = np.arange(11) % 9
    result = read_cucumber9(write_cucumber9(tmp_path / "c", images, labels, P1_NAMES, num_batches=11))
    assert [i.split(":")[0] for i in result.ids] == [f"data_batch_{k}" for k in range(1, 12)]
    np.testing.assert_array_equal(result.images, images)
    assert result.split is None


def test_any_square_size_is_read(tmp_path):
    images = random_images(3, 5, 5, 3)
    result = read_cucumber9(write_cucumber9(tmp_path / "c", images, np.array([0, 1, 2]), P1_NAMES, num_batches=1))
    assert result.image_size == (5, 5)
    np.testing.assert_array_equal(result.images, images)


def test_grade_order_decides_the_targets(p1_folder):
    folder, _, _ = p1_folder
    order = ["C", "BS", "BM", "BL", "2S", "S", "M", "L", "2L"]
    result = read_cucumber9(folder, grade_order=order)
    assert result.grade_names == order
    np.testing.assert_array_equal(result.targets, [2, 7, 8, 0, 3, 2])


def test_aliases_and_other_of_prototype_2(tmp_path):
    images = random_images(5, 2, 2, 3)
    labels = np.array([0, 6, 7, 1, 0])  # OTHER, BD, BC, 2L, OTHER
    folder = write_cucumber9(tmp_path / "c", images, labels, P2_NAMES, num_batches=1, prototype=2)
    result = read_cucumber9(folder)
    np.testing.assert_array_equal(result.targets, [5, 6, 0])  # BD = BL, BC = BM
    assert result.ids == ["data_batch_1:1", "data_batch_1:2", "data_batch_1:3"]
    assert result.dropped == {"OTHER": 2}
    assert result.source.startswith("CUCUMBER-9 prototype 2 (folder ")

    kept = read_cucumber9(folder, grade_order=[*DEFAULT_GRADE_ORDER, "OTHER"], keep_other=True)
    np.testing.assert_array_equal(kept.targets, [9, 5, 6, 0, 9])
    assert kept.dropped == {}
    with pytest.raises(DataError, match="add OTHER to --grades"):
        read_cucumber9(folder, keep_other=True)


def test_grade_order_may_use_the_prototype_2_spelling(tmp_path):
    folder = write_cucumber9(tmp_path / "c", random_images(2, 2, 2, 3), np.array([2, 1]), P1_NAMES, num_batches=1)
    order = ["2L", "L", "M", "S", "2S", "BD", "BC", "BS", "C"]
    np.testing.assert_array_equal(read_cucumber9(folder, grade_order=order).targets, [5, 6])


def test_grade_missing_from_the_order_names_it_and_the_fix(p1_folder):
    folder, _, _ = p1_folder
    with pytest.raises(DataError, match=r"names grade 'BS'.*--grades") as info:
        read_cucumber9(folder, grade_order=["2L", "L", "M", "S", "2S", "BL", "BM", "C"])
    assert str(folder / "batches.meta") in str(info.value)
    with pytest.raises(ConfigError):
        read_cucumber9(folder, grade_order=["2L", "2L"])


def test_views_of_prototype_2(tmp_path):
    views = random_images(3, 3, 4, 4, 3)  # (cucumber, above/below/side, H, W, RGB)
    labels = np.array([1, 2, 3])
    folder = write_cucumber9(tmp_path / "c", views, labels, P2_NAMES, num_batches=1, prototype=2)
    for v, view in enumerate(("above", "below", "side")):
        np.testing.assert_array_equal(read_cucumber9(folder, view=view).images, views[:, v])
    everything = read_cucumber9(folder, view="all")
    np.testing.assert_array_equal(everything.images, views.reshape(9, 4, 4, 3))
    assert everything.ids[:4] == [
        "data_batch_1:0:above",
        "data_batch_1:0:below",
        "data_batch_1:0:side",
        "data_batch_1:1:above",
    ]
    np.testing.assert_array_equal(everything.groups, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(everything.targets, [0, 0, 0, 1, 1, 1, 2, 2, 2])


def test_view_all_counts_three_dropped_images_per_other_cucumber(tmp_path):
    images = random_images(2, 2, 2, 3)
    folder = write_cucumber9(tmp_path / "c", images, np.array([0, 1]), P2_NAMES, num_batches=1, prototype=2)
    result = read_cucumber9(folder, view="all")
    assert result.dropped == {"OTHER": 3} and len(result) == 3
    np.testing.assert_array_equal(result.images[0], result.images[2])  # one image written as all views


def test_prototype_1_has_only_the_view_from_above(p1_folder):
    folder, _, _ = p1_folder
    for view in ("below", "side", "all"):
        with pytest.raises(DataError, match="only the 'above' view"):
            read_cucumber9(folder, view=view)
    with pytest.raises(ConfigError, match="--view"):
        read_cucumber9(folder, view="top")


def test_archive_reads_like_the_folder(p1_folder, tmp_path):
    folder, _, _ = p1_folder
    archive = write_tar_gz(folder, tmp_path / "cucumber-9-python.tar.gz")
    from_folder, from_archive = read_cucumber9(folder), read_cucumber9(archive)
    np.testing.assert_array_equal(from_archive.images, from_folder.images)
    np.testing.assert_array_equal(from_archive.targets, from_folder.targets)
    assert from_archive.ids == from_folder.ids
    np.testing.assert_array_equal(from_archive.split, from_folder.split)
    assert from_archive.source == f"CUCUMBER-9 prototype 1 (archive {archive})"


def test_a_generated_set_says_it_is_synthetic_in_folder_and_archive(tmp_path):
    images = random_images(3, 8, 8, 3)
    folder = write_cucumber9(
        tmp_path / "cucumber-9-python", images, np.array([0, 1, 5]), P1_NAMES, num_batches=1, synthetic=True
    )
    archive = write_tar_gz(folder, tmp_path / "synthetic.tar.gz")
    from_folder, from_archive = read_cucumber9(folder), read_cucumber9(archive)
    assert from_folder.source == f"synthetic cucumbers in CUCUMBER-9 prototype 1 format (folder {folder})"
    assert from_archive.source == f"synthetic cucumbers in CUCUMBER-9 prototype 1 format (archive {archive})"
    np.testing.assert_array_equal(from_folder.images, images)
    unmarked = write_cucumber9(tmp_path / "plain", images, np.array([0, 1, 5]), P1_NAMES, num_batches=1)
    assert read_cucumber9(unmarked).source == f"CUCUMBER-9 prototype 1 (folder {unmarked})"


def test_archive_ignores_links_and_other_members_and_is_never_extracted(p1_folder, tmp_path):
    folder, images, _ = p1_folder
    archive = tmp_path / "odd.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cucumber-9-python")
        link = tarfile.TarInfo("cucumber-9-python/data_batch_9")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    before = sorted(os.listdir(tmp_path))
    np.testing.assert_array_equal(read_cucumber9(archive).images, images)
    assert sorted(os.listdir(tmp_path)) == before


def test_is_cucumber9(p1_folder, tmp_path):
    folder, _, _ = p1_folder
    archive = write_tar_gz(folder, tmp_path / "c.tar.gz")
    not_archive = tmp_path / "x.tar.gz"
    not_archive.write_bytes(b"not gzip")
    assert is_cucumber9(folder) and is_cucumber9(folder.parent) and is_cucumber9(archive)
    assert not is_cucumber9(not_archive)
    assert not is_cucumber9(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert not is_cucumber9(tmp_path / "empty")


# --- hostile and damaged files ---------------------------------------------------------------


class RunsShell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickle_that_would_run_a_command_is_refused(tmp_path, protocol):
    marker = tmp_path / "MARKER"
    data = pickle.dumps({"data": RunsShell(f"touch {marker}"), "labels": []}, protocol=protocol)
    with pytest.raises(DataError, match=r"refusing to unpickle \w+\.system in data_batch_1: .*not a CUCUMBER-9 batch"):
        safe_load_pickle(data, "data_batch_1")
    assert not marker.exists()


@pytest.mark.parametrize("file", ["data_batch_1", "batches.meta"])
def test_reader_refuses_a_hostile_file_in_a_folder(p1_folder, file):
    folder, _, _ = p1_folder
    marker = folder.parent / "MARKER"
    (folder / file).write_bytes(pickle.dumps(RunsShell(f"touch {marker}"), protocol=2))
    with pytest.raises(DataError, match="refusing to unpickle") as info:
        read_cucumber9(folder)
    assert str(folder / file) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("data", [b"", b"\x80\x02}(U\x04data", b"garbage", b"\x80\x02K\x01."])
def test_damaged_pickles_raise_data_error(data):
    with pytest.raises(DataError, match="test_batch"):
        safe_load_pickle(data, "test_batch")


def test_truncated_batch_and_archive(p1_folder, tmp_path):
    folder, _, _ = p1_folder
    archive = write_tar_gz(folder, tmp_path / "c.tar.gz")
    archive.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(DataError, match="download the archive again") as info:
        read_cucumber9(archive)
    assert str(archive) in str(info.value)
    batch = folder / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(DataError, match="truncated or corrupt") as info:
        read_cucumber9(folder)
    assert str(batch) in str(info.value)


def rewrite(path, **changes):
    """Replace entries of a written batch; protocol 3 keeps numpy 2 from naming _codecs.encode."""
    content = safe_load_pickle(path.read_bytes(), path.name)
    content.update(changes)
    content = {key: value for key, value in content.items() if value is not None}
    path.write_bytes(pickle.dumps(content, protocol=3))


def test_missing_path_and_folder_without_meta(tmp_path):
    with pytest.raises(DataError, match="does not exist") as info:
        read_cucumber9(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    with pytest.raises(DataError, match="no batches.meta in") as info:
        read_cucumber9(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize(
    "file, changes, message",
    [
        ("batches.meta", {"label_names": None}, "has no label_names"),
        ("data_batch_2", {"labels": [0, 11]}, "labels in .*data_batch_2 use index 11 but .*meta names only 9 grades"),
        ("data_batch_2", {"data": np.zeros((7, 16), np.uint8)}, "7 rows, not a multiple of 3"),
        ("data_batch_2", {"data": np.zeros((9, 16), np.uint8)}, "9 rows for 2 labels"),
        ("data_batch_2", {"data": np.zeros((6, 15), np.uint8)}, "15 values, not a square"),
        ("data_batch_2", {"data": None}, "no 'data' entry"),
        ("data_batch_2", {"labels": None}, "no 'labels' entry"),
        ("data_batch_2", {"data": [1, 2, 3]}, "not a 2-D uint8 array"),
        ("data_batch_2", {"labels": [[0], [1, 2]]}, "labels in .*data_batch_2 are not a list of integers"),
    ],
)
def test_bad_content_names_the_file(p1_folder, file, changes, message):
    folder, _, _ = p1_folder
    rewrite(folder / file, **changes)
    with pytest.raises(DataError, match=message) as info:
        read_cucumber9(folder)
    assert str(folder / file) in str(info.value)
    assert "\n" not in str(info.value)


def test_batches_of_different_sets_do_not_mix(p1_folder):
    folder, _, _ = p1_folder
    rewrite(folder / "data_batch_2", data=np.zeros((6, 25), np.uint8))
    with pytest.raises(DataError, match="different sets"):
        read_cucumber9(folder)


def test_archive_without_meta(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("readme.txt"))
    with pytest.raises(DataError, match="no batches.meta member") as info:
        read_cucumber9(archive)
    assert str(archive) in str(info.value)


# --- the real files --------------------------------------------------------------------------


def test_real_prototype_1_sample(shared_dir):
    sample = shared_dir / "data" / "cucumber9-p1-sample"
    assert is_cucumber9(sample)
    result = read_cucumber9(sample)
    assert len(result) == 248 and result.image_size == (32, 32)
    assert result.counts() == {grade: SAMPLE_COUNTS[grade] for grade in DEFAULT_GRADE_ORDER}
    assert (result.split == "test").sum() == 48 and result.dropped == {}
    assert result.source == f"CUCUMBER-9 prototype 1 (folder {sample})"


def test_writer_matches_the_real_files_opcode_for_opcode(shared_dir, tmp_path):
    """Re-written, a real batch differs only in how an int is spelled (cPickle's BININT2 vs BININT)."""
    from imgrade.data.cucumber9_writer import _py2_pickle

    for name in ("test_batch", "batches.meta"):
        real = (shared_dir / "data" / "cucumber9-p1-sample" / "cucumber-9-python" / name).read_bytes()
        mine = _py2_pickle(safe_load_pickle(real, name))

        def ops(data):
            return [("INT" if "BININT" in op.name else op.name, arg) for op, arg, _ in pickletools.genops(data)]

        assert ops(mine) == ops(real)


def test_real_sample_reads_the_same_from_an_archive(shared_dir, tmp_path):
    folder = shared_dir / "data" / "cucumber9-p1-sample" / "cucumber-9-python"
    archive = write_tar_gz(folder, tmp_path / "cucumber-9-python.tar.gz")
    a, b = read_cucumber9(folder), read_cucumber9(archive)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.ids == b.ids


def test_real_prototype_2_meta(shared_dir, tmp_path):
    real_meta = shared_dir / "data" / "cucumber9-p2-meta" / "batches.meta"
    meta = safe_load_pickle(real_meta.read_bytes(), str(real_meta))
    assert meta["label_names"] == P2_NAMES and meta["num_vis"] == 3072
    views = random_images(4, 3, 32, 32, 3)
    labels = np.array([0, 6, 7, 9])  # OTHER, BD, BC, C
    folder = write_cucumber9(tmp_path / "cucumber-9-p2-python", views, labels, P2_NAMES, num_batches=1, prototype=2)
    shutil.copyfile(real_meta, folder / "batches.meta")
    result = read_cucumber9(tmp_path, view="side")
    np.testing.assert_array_equal(result.targets, [5, 6, 8])  # BD = BL, BC = BM, C
    np.testing.assert_array_equal(result.images, views[1:, 2])
    assert result.dropped == {"OTHER": 1} and result.split is None
    assert result.source == f"CUCUMBER-9 prototype 2 (folder {tmp_path})"
