"""Sets larger than memory: a memory-mapped set is viewed, subset and graded a batch at a time, never copied whole."""

import warnings

import numpy as np
import torch

from imgrade.core.preprocess import mean_image, nhwc_to_tensor
from imgrade.data.imageset import ImageRows, ImageSet
from imgrade.runtime.torch_engine import TorchEngine
from imgrade.training.loop import FitData, data_device, take


def _memmap(tmp_path, n: int, size: int = 8, seed: int = 0) -> np.memmap:
    """A read-only memory-mapped uint8 (n, size, size, 3) file, as the decoded-image cache returns."""
    path = tmp_path / f"images-{n}-{size}.npy"
    np.save(path, np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    return np.load(path, mmap_mode="r")


def test_a_read_only_memmap_becomes_a_channels_last_tensor_over_its_pages_without_a_warning(tmp_path):
    images = _memmap(tmp_path, 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = nhwc_to_tensor(images)
    assert x.shape == (50, 3, 8, 8) and x.data_ptr() == images.ctypes.data
    assert x.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(x.numpy(), images.transpose(0, 3, 1, 2))
    in_memory = np.array(images)
    assert np.shares_memory(nhwc_to_tensor(in_memory).numpy(), in_memory)


def test_batches_gathered_in_file_order_come_back_in_the_order_asked(tmp_path):
    x = nhwc_to_tensor(_memmap(tmp_path, 40))
    rows = torch.tensor([31, 2, 17, 2, 39, 0])
    assert torch.equal(take(x, rows), x[rows])
    assert torch.equal(take(x, rows), torch.from_numpy(np.array(x.numpy()[rows.numpy()])))


def test_the_mean_image_in_chunks_is_the_mean_of_the_whole_split(tmp_path):
    x = nhwc_to_tensor(_memmap(tmp_path, 103))
    index = torch.from_numpy(np.random.default_rng(1).permutation(103)[:77])
    got = mean_image(x, index, chunk=10)
    assert got.dtype == torch.float32 and got.shape == (3, 8, 8) and got.is_contiguous()
    assert torch.equal(got, x[index].double().mean(dim=0).div(255.0).float())  # exact sums, one rounding
    before = x[index].float().mean(dim=0).div_(255.0)  # how training computed it, the whole split in float32
    torch.testing.assert_close(got, before, rtol=2 * torch.finfo(torch.float32).eps, atol=0)
    assert torch.equal(mean_image(x, index, chunk=1000), got)


def test_a_subset_of_a_memory_mapped_set_reads_no_images_until_sliced(tmp_path):
    images = _memmap(tmp_path, 20)
    imageset = ImageSet(images, np.arange(20, dtype=np.float32), None, [f"im{i}" for i in range(20)])
    index = np.array([15, 2, 9, 4])
    subset = imageset.subset(index)
    assert isinstance(subset.images, ImageRows) and subset.images.base is images
    assert len(subset) == 4 and subset.image_size == (8, 8) and subset.ids == ["im15", "im2", "im9", "im4"]
    np.testing.assert_array_equal(subset.images[1:3], images[[2, 9]])
    np.testing.assert_array_equal(subset.images[0], images[15])
    np.testing.assert_array_equal(np.asarray(subset.images), images[index])
    again = subset.subset([3, 0])
    assert isinstance(again.images, ImageRows) and again.images.base is images
    np.testing.assert_array_equal(np.asarray(again.images), images[[4, 15]])
    in_memory = ImageSet(np.array(images), imageset.targets, None, imageset.ids).subset(index)
    assert type(in_memory.images) is np.ndarray
    np.testing.assert_array_equal(in_memory.images, images[index])


def test_fit_data_from_one_set_holds_its_images_once(tmp_path):
    x = nhwc_to_tensor(_memmap(tmp_path, 30))
    data = FitData.from_set(x, torch.zeros(30), torch.tensor([0, 5, 9]), torch.tensor([1, 2]), torch.zeros(3, 8, 8))
    assert data.train_x is x and data.val_x is x and len(data.train_index) == 3
    separate = FitData(x[:4], torch.zeros(4), x[4:6], torch.zeros(2), torch.zeros(3, 8, 8))
    assert separate.train_index.tolist() == [0, 1, 2, 3] and separate.val_index.tolist() == [0, 1]


def test_a_set_goes_to_the_gpu_only_when_it_takes_a_small_share_of_its_free_memory(monkeypatch):
    x = torch.zeros(10, 3, 4, 4, dtype=torch.uint8)  # 480 bytes
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * 480, 10**9))
    assert data_device(x, gpu) == gpu
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * 480 - 4, 10**9))
    assert data_device(x, gpu) == torch.device("cpu")
    assert data_device(x, torch.device("cpu")) == torch.device("cpu")


def test_predictor_outputs_on_a_memmap_and_its_subsets_match_the_in_memory_copy(tmp_path, trained_run):
    predictor = TorchEngine.from_run(trained_run, device="cpu")
    images = _memmap(tmp_path, 45, size=32)
    in_memory = np.array(images)
    expected = predictor.outputs(in_memory, batch_size=16)
    got = predictor.outputs(images, batch_size=16)
    np.testing.assert_array_equal(got.scores, expected.scores)
    np.testing.assert_array_equal(got.native, expected.native)
    index = np.array([40, 3, 17, 8, 29, 30, 1])
    subset = predictor.outputs(ImageRows(images, index), batch_size=4)
    np.testing.assert_array_equal(subset.scores, predictor.outputs(in_memory[index], batch_size=4).scores)
    # the whole input as one contiguous NCHW tensor, as outputs converted it before: the same numbers
    whole = torch.from_numpy(np.ascontiguousarray(in_memory.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(predictor.outputs(whole, batch_size=16).scores, expected.scores, rtol=1e-6, atol=1e-6)
