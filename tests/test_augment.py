import torch

from digitscan.trainer.augment import AugmentConfig, augment


def test_augment_keeps_shape_and_dtype_and_changes_pixels(mnist):
    x = torch.from_numpy(mnist.test_images[:64].copy()).unsqueeze(1)
    out = augment(x, AugmentConfig(), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    changed = (out != x).flatten(1).any(1).float().mean()
    assert changed > 0.9
    # Still a digit: most of the ink survives, nothing floods the field.
    ratio = out.float().sum() / x.float().sum()
    assert 0.6 < ratio < 1.6


def test_augment_is_reproducible_with_a_generator(mnist):
    x = torch.from_numpy(mnist.test_images[:8].copy()).unsqueeze(1)
    a = augment(x, generator=torch.Generator().manual_seed(1))
    b = augment(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_identity_config_changes_nothing(mnist):
    x = torch.from_numpy(mnist.test_images[:8].copy()).unsqueeze(1)
    cfg = AugmentConfig(max_rotation_deg=0, scale_range=(1, 1), max_shift_px=0, max_shear=0,
                        p_thicken=0, p_thin=0, p_blur=0)
    assert torch.equal(augment(x, cfg), x)
