import torch

from imgrade.data.augment import random_shift_flip


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
