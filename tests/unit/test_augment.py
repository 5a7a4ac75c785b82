import pytest
import torch

from imgrade.data.augment import (
    gaussian_blur,
    photometric,
    random_blur,
    random_color_jitter,
    random_rotate,
    random_shift_flip,
    rotate,
)


def _reference(img, dy, dx, flip):
    """Per-image shift with edge replication, written the slow obvious way."""
    C, H, W = img.shape
    out = torch.empty_like(img)
    for r in range(H):
        for c in range(W):
            src_c = min(max(c - dx, 0), W - 1)
            out[:, r, c] = img[:, min(max(r - dy, 0), H - 1), src_c]
    return out.flip(2) if flip else out


def test_matches_a_per_image_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 10, 10), dtype=torch.uint8)
    out = random_shift_flip(x, 0.3, True, torch.Generator().manual_seed(0))
    # replay the same random draws
    dy = torch.randint(-3, 4, (16,), generator=g)
    dx = torch.randint(-3, 4, (16,), generator=g)
    flipped = torch.rand(16, generator=g) < 0.5
    for i in range(16):
        assert torch.equal(out[i], _reference(x[i], int(dy[i]), int(dx[i]), bool(flipped[i])))
    assert out.dtype == torch.uint8 and out.shape == x.shape


def test_shift_of_ten_percent_moves_at_most_three_pixels_on_32():
    x = torch.zeros(200, 1, 32, 32)
    x[:, :, 16, 16] = 1.0
    out = random_shift_flip(x, 0.1, False, torch.Generator().manual_seed(1))
    pos = out.flatten(1).argmax(1)
    rows, cols = pos // 32, pos % 32
    assert (rows - 16).abs().max() == 3 and (cols - 16).abs().max() == 3


def test_flip_only_flips_about_half():
    x = torch.arange(8.0).repeat(1000, 1, 1, 1).reshape(1000, 1, 1, 8)
    out = random_shift_flip(x, 0.0, True, torch.Generator().manual_seed(2))
    flipped = (out[:, 0, 0, 0] == 7).float().mean().item()
    assert 0.4 < flipped < 0.6
    assert torch.equal(out[out[:, 0, 0, 0] == 7][0, 0, 0], torch.arange(7.0, -1, -1))


def test_same_generator_state_same_batch():
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    a = random_shift_flip(x, 0.1, True, torch.Generator().manual_seed(5))
    b = random_shift_flip(x, 0.1, True, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- photometric


def _state(seed: int) -> torch.Tensor:
    return torch.Generator().manual_seed(seed).get_state()


def test_photometric_at_zero_is_the_identity_and_draws_nothing():
    x = torch.rand(2, 3, 32, 32)
    g = torch.Generator().manual_seed(3)
    assert photometric(x, 0.0, 0.0, 0.0, g) is x
    assert torch.equal(g.get_state(), _state(3))


@pytest.mark.parametrize("amounts", [(0.2, 0, 0), (0, 15, 0), (0, 0, 1.5), (0.2, 15, 1.5)])
def test_photometric_same_seed_same_batch_in_range(amounts):
    x = torch.rand(2, 3, 32, 32)
    a = photometric(x, *amounts, torch.Generator().manual_seed(4))
    b = photometric(x, *amounts, torch.Generator().manual_seed(4))
    c = photometric(x, *amounts, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1 and torch.isfinite(a).all()


def test_rotation_by_zero_degrees_is_the_identity():
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(rotate(x, torch.zeros(2)), x, atol=1e-5)
    assert random_rotate(x, 0.0, torch.Generator()) is x


def test_rotation_by_90_degrees_turns_the_picture_counter_clockwise():
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(
        rotate(x, torch.tensor([90.0, -90.0])), torch.stack([x[0].rot90(1, (1, 2)), x[1].rot90(-1, (1, 2))]), atol=1e-5
    )


def test_rotation_stays_within_the_bound():
    # a bright dot 10 px right of the centre moves along the circle by at most 10 degrees
    x = torch.zeros(64, 1, 33, 33)
    x[:, :, 16, 26] = 1.0
    out = random_rotate(x, 10.0, torch.Generator().manual_seed(6))
    pos = out.flatten(1).argmax(1)
    angles = torch.atan2(-(pos // 33 - 16).float(), (pos % 33 - 16).float()).rad2deg()
    assert angles.abs().max() <= 10 + 6  # +- one pixel of the 10-pixel radius
    assert angles.abs().max() > 5  # and it does rotate


def test_blur_keeps_a_constant_image_and_the_mean_of_a_flat_one():
    constant = torch.full((2, 3, 32, 32), 0.3)
    out = random_blur(constant, 3.0, torch.Generator().manual_seed(7))
    assert torch.allclose(out, constant, atol=1e-6)
    stripes = torch.rand(2, 3, 1, 32).expand(2, 3, 32, 32)
    assert torch.allclose(
        gaussian_blur(stripes, torch.tensor([2.0, 0.5]), 6).mean((2, 3)), stripes.mean((2, 3)), atol=0.02
    )


def test_blur_sigma_zero_is_exact_and_larger_sigma_smooths_more():
    x = torch.rand(3, 3, 32, 32)
    out = gaussian_blur(x, torch.tensor([0.0, 0.7, 2.0]), 6)
    assert torch.equal(out[0], x[0])
    roughness = (out[:, :, :, 1:] - out[:, :, :, :-1]).abs().mean((1, 2, 3))
    assert roughness[0] > roughness[1] > roughness[2]


def test_blur_works_on_the_smallest_images():
    x = torch.rand(2, 3, 8, 8)
    assert random_blur(x, 5.0, torch.Generator().manual_seed(8)).shape == x.shape


def test_color_jitter_changes_each_image_within_the_bound():
    x = torch.rand(8, 3, 32, 32) * 0.5 + 0.25  # away from the clamp
    out = random_color_jitter(x, 0.1, torch.Generator().manual_seed(9))
    change = (out - x).abs().amax((1, 2, 3))
    assert (change > 0).all()
    # four factors of at most 1.1 each: a pixel moves by less than 0.47 of [0, 1]
    assert change.max() < 1.1**4 - 1
    assert torch.allclose(out.mean(), x.mean(), atol=0.1)


def test_color_jitter_brightness_only_scales_a_gray_image():
    gray = torch.full((4, 3, 8, 8), 0.5)
    out = random_color_jitter(gray, 0.2, torch.Generator().manual_seed(10))
    assert ((out >= 0.5 * 0.8**2 - 1e-6) & (out <= 0.5 * 1.2**2 + 1e-6)).all()  # brightness x gain
    assert torch.equal(random_color_jitter(gray, 0.0), gray)
