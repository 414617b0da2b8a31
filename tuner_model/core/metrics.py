"""Quality measures: PSNR, SSIM and TUNER's gradient PSNR (TUNER.md §7)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def mse_to_psnr(mse: float, peak: float = 1.0) -> float:
    return float("inf") if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """PSNR in dB with peak 1 between two float images (or pixel lists) in [0, 1]."""
    a_t = torch.as_tensor(a, dtype=torch.float64)
    b_t = torch.as_tensor(b, dtype=torch.float64)
    return mse_to_psnr(float(((a_t - b_t) ** 2).mean()))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004: 11×11 Gaussian window σ=1.5, K1=0.01, K2=0.03, peak 1),
    averaged over channels; (H, W, C) float images in [0, 1]."""
    x = torch.as_tensor(np.asarray(a), dtype=torch.float64).permute(2, 0, 1)[:, None]
    y = torch.as_tensor(np.asarray(b), dtype=torch.float64).permute(2, 0, 1)[:, None]
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :])[None, None]

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win)

    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


def sobel_magnitude(gray: np.ndarray) -> np.ndarray:
    t = torch.as_tensor(gray, dtype=torch.float64)[None, None]
    kx = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=torch.float64)[None, None]
    gx = F.conv2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), kx)
    gy = F.conv2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), kx.transpose(2, 3))
    return torch.sqrt(gx**2 + gy**2)[0, 0].numpy()


def gradient_psnr(pred_grad_mag: np.ndarray, image: np.ndarray) -> float:
    """TUNER's gradient PSNR: min-max normalised magnitude of the network's autograd gradient against
    the Sobel magnitude of the ground truth's gray image divided by its maximum (both in [0, 1])."""
    if image.shape[2] == 3:
        gray = image @ np.array([0.299, 0.587, 0.114])
    else:
        gray = image[..., 0]
    gt = sobel_magnitude(gray)
    gt = gt / max(gt.max(), 1e-12)
    p = pred_grad_mag - pred_grad_mag.min()
    p = p / max(p.max(), 1e-12)
    return mse_to_psnr(float(((p - gt) ** 2).mean()))
