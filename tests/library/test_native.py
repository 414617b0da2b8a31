"""The compiled top-layer kernel (train/top_layer.c) computes what the eager form does: the loss, the output
layer's gradients and dz, on tiles of every shape it takes (partial pixel blocks, 1 or 3 channels, a 0/1
mask, more threads than rows), with sines of large arguments; and it is what the grid path runs."""

import os

import pytest
import torch

from tuner_model.train import grid as grid_mod
from tuner_model.train import native


@pytest.fixture(scope="module")
def kernel():
    if native.load() is None:
        if os.environ.get("CI"):
            pytest.fail("the native kernel did not build on CI (a C compiler is on every CI machine)")
        pytest.skip("no C compiler here")


def _reference(z, cw, cb, target, mask, scale):
    z64 = z.double()
    s = torch.sin(z64)
    o = torch.einsum("cn,tnw->tcw", cw.double(), s) + cb.double()[None, :, None] - target.double()
    if mask is not None:
        o = o * mask.double()[:, None, :]
    d = o * scale
    dz = torch.cos(z64) * torch.einsum("cn,tcw->tnw", cw.double(), d)
    return (o * o).sum(), d.sum(dim=(0, 2)), torch.einsum("tcw,tnw->cn", d, s), dz


@pytest.mark.parametrize("neuron_major", [False, True], ids=["rows-first", "neuron-major"])
@pytest.mark.parametrize("t,n,w,c,masked,amp,threads", [
    (5, 24, 37, 3, False, 8.0, 2),      # w not a multiple of the 16-pixel block
    (3, 17, 16, 1, True, 30.0, 2),      # gray, masked, one exact block
    (1, 40, 100, 3, True, 1000.0, 4),   # more threads than rows; arguments far past 2π
    (7, 8, 5, 2, False, 3.0, 1),
])
def test_kernel_matches_the_eager_form(kernel, t, n, w, c, masked, amp, threads, neuron_major, monkeypatch):
    """In both tile layouts: (t, n, w), and (n, t, w) as the deep grid path keeps its tiles."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    g = torch.Generator().manual_seed(t * 100 + n)
    z = (torch.rand((t, n, w), generator=g) * 2 - 1) * amp
    cw = torch.randn((c, n), generator=g) * 0.2
    cb = torch.randn(c, generator=g)
    target = torch.rand((t, c, w), generator=g)
    mask = (torch.rand((t, w), generator=g) > 0.3).float() if masked else None
    scale = 2.0 / (t * w * c)
    sums = native.Sums.zeros(c, n)
    sums.d_b += 0.5  # the kernel adds to its accumulators
    if neuron_major:
        laid = torch.empty((n, t, w)).copy_(z.transpose(0, 1))
        assert native.top_layer(laid, cw, cb, target, mask, scale, sums, neuron_major=True)
        got = laid.transpose(0, 1)
    else:
        got = z.clone()
        assert native.top_layer(got, cw, cb, target, mask, scale, sums)
    loss, d_b, d_c = sums.loss, sums.d_b, sums.d_c
    want_loss, want_b, want_c, want_dz = _reference(z, cw, cb, target, mask, scale)
    torch.testing.assert_close(loss[0], want_loss, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(d_b - 0.5, want_b, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(d_c, want_c, rtol=1e-4, atol=1e-7)
    # float32 sines of arguments up to 1000: the reduction keeps them to ~1e-6 absolute
    torch.testing.assert_close(got.double(), want_dz, rtol=1e-4, atol=1e-6 * max(1.0, amp / 100))


def test_kernel_refuses_what_it_cannot_take(kernel):
    z = torch.zeros((2, 4, 8))
    cw = torch.zeros((4, 4))  # four channels
    assert not native.top_layer(z, cw, torch.zeros(4), torch.zeros((2, 4, 8)), None, 1.0, native.Sums.zeros(4, 4))
    assert not native.top_layer(z.double(), cw[:3], torch.zeros(3), torch.zeros((2, 3, 8)), None, 1.0,
                                native.Sums.zeros(3, 4))


@pytest.mark.parametrize("hidden", [(24,), (20, 16), (16, 16, 12)], ids=["one-layer", "two-layers", "three-layers"])
def test_grid_path_runs_the_kernel(kernel, monkeypatch, hidden):
    """The kernel takes the top hidden layer, of one layer or of the last of several (torch the rest), and
    the gradients still equal the dense path's; with NATIVE_TOP off it is not called."""
    calls = []
    real = native.top_layer

    def counting(*args, **kwargs):
        z, major = args[0], args[7] if len(args) > 7 else kwargs.get("neuron_major", False)
        calls.append(z.shape[0] if major else z.shape[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(native, "top_layer", counting)
    from tests.library.test_train_grid import _compare, _image, _trained
    from tuner_model.models import ModelConfig

    cfg = ModelConfig(input_width=24, hidden=hidden, bandlimit=12, block_limit=4)
    _compare(_trained(cfg), [_image()])
    assert calls, "the grid path did not take the kernel"
    assert all(n == hidden[-1] for n in calls)  # the top layer's pre-activations
    monkeypatch.setattr(grid_mod, "NATIVE_TOP", False)
    calls.clear()
    _compare(_trained(cfg), [_image()])
    assert not calls
