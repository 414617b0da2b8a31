"""Latent-grid TUNER: f(x) = C · H(S(x), z(x)) + e, with z read from multi-resolution latent grids.

z_l(x) is grid l (1/2^l of the native resolution, one channel) read at x by cubic interpolation, so every
position of the continuous image has a value and any output size or crop is evaluated directly.
S_j(x) = sin(<ω_j, x> + φ_j) is TUNER's input layer (ω = (2π/p)·k, k frozen on the integer lattice);
the first hidden layer sees S and z together: h1 = sin(W_S S + W_z z + b1), with TUNER's per-column bound
|W_S[i, j]| <= c_j on the S columns (the latent columns are free: they carry the detail); deeper sine
layers are bounded by bound_deep, as in TunerNet; C is linear.

The grids hold the information, the network is small: the cost per output pixel is counted by
`macs_per_pixel`. Latents are coded as integers (the network sees them at quantization step 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from tuner_model.core import cubic
from tuner_model.core.coords import FULL, Crop, axis_centres, extent
from tuner_model.core.errors import ConfigError
from tuner_model.core.frequencies import FrequencySpec, is_low, sample_frequencies


@dataclass(frozen=True)
class LatentConfig:
    levels: int = 7  # latent grids at 1, 1/2, ..., 1/2^(levels-1) of the native resolution
    input_width: int = 16  # m: TUNER input sines (frozen integer frequencies)
    hidden: tuple[int, ...] = field(default=(16,))
    channels: int = 3
    period: float = 4.0
    bandlimit: int = 16
    block_limit: int = 4
    low_fraction: float = 0.7
    freq_seed: int = 0
    bound_low: float = 1.0
    bound_high: float = 0.6
    bound_deep: float = 2.0
    neighbours: int = 0  # 0, or 4: the finest grid is also read one native pixel up, down, left, right
    latent_step: float = 0.1  # the synthesis reads integer latents times this

    def __post_init__(self) -> None:
        hidden = tuple(int(h) for h in self.hidden)
        object.__setattr__(self, "hidden", hidden)
        if not 1 <= self.levels <= 12:
            raise ConfigError(f"levels must be in 1..12, got {self.levels}")
        if not 2 <= self.input_width <= 256:
            raise ConfigError(f"input width must be in 2..256, got {self.input_width}")
        if not 1 <= len(hidden) <= 4 or not all(1 <= h <= 128 for h in hidden):
            raise ConfigError("hidden must list 1..4 widths, each in 1..128")
        if not 1e-3 <= self.latent_step <= 1e3:
            raise ConfigError(f"latent step must be in [1e-3, 1e3], got {self.latent_step}")
        if self.neighbours not in (0, 4):
            raise ConfigError(f"neighbours must be 0 or 4, got {self.neighbours}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        for name in ("bound_low", "bound_high", "bound_deep"):
            if not 0.0 < getattr(self, name) <= 100.0:
                raise ConfigError(f"{name} must be in (0, 100]")

    def frequency_spec(self) -> FrequencySpec:
        return FrequencySpec(self.input_width, self.bandlimit, self.block_limit, self.low_fraction,
                             self.freq_seed)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LatentConfig:
        known = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or set(d) - known:
            raise ConfigError("bad latent model configuration")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"bad latent model configuration: {e}") from None


def grid_shapes(width: int, height: int, levels: int) -> list[tuple[int, int]]:
    """(rows, columns) of each latent grid: level l covers the image with cells of 2^l pixels."""
    return [(-(-height // (1 << lv)), -(-width // (1 << lv))) for lv in range(levels)]


def macs_per_pixel(config: LatentConfig) -> int:
    """Multiply-adds per output pixel, everything counted: 2 × 4 taps per grid (separable cubic, the
    cheaper axis order makes the second pass per output pixel and the first shared), the input sines
    (sin(a+b) from per-row and per-column factors: 2 products), the layers."""
    m, lv = config.input_width, config.levels
    widths = (feature_width(config), *config.hidden)
    layers = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    return 8 * (lv + config.neighbours) + 2 * m + layers + config.hidden[-1] * config.channels


def feature_width(config: LatentConfig) -> int:
    """Inputs of the first hidden layer: the sines, one value per grid, the finest grid's neighbours."""
    return config.input_width + config.levels + config.neighbours


class LatentTunerNet(nn.Module):
    def __init__(self, config: LatentConfig, width: int, height: int,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        self.native = (width, height)
        m = config.input_width
        k = torch.from_numpy(sample_frequencies(config.frequency_spec()))
        low = torch.from_numpy(is_low(k.numpy(), config.block_limit))
        self.register_buffer("omega", (2 * math.pi / config.period) * k.to(torch.float32), persistent=False)
        c = torch.where(low, torch.tensor(config.bound_low), torch.tensor(config.bound_high))
        self.register_buffer("column_bound", c.to(torch.float32), persistent=False)
        self.latents = nn.ParameterList(
            [nn.Parameter(torch.zeros(h, w)) for h, w in grid_shapes(width, height, config.levels)]
        )
        self.phase = nn.Parameter(_uniform((m,), math.pi / 2, generator))
        widths = (feature_width(config), *config.hidden)
        self.hidden = nn.ParameterList()
        self.hidden_bias = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            self.hidden.append(nn.Parameter(_uniform((fan_out, fan_in), math.sqrt(6 / fan_in), generator)))
            self.hidden_bias.append(nn.Parameter(_uniform((fan_out,), 1 / math.sqrt(fan_in), generator)))
        n = widths[-1]
        self.out = nn.Linear(n, config.channels)
        with torch.no_grad():
            self.out.weight.copy_(_uniform((config.channels, n), math.sqrt(6 / n) / 30, generator))
            self.out.bias.fill_(0.5)
        self.project()

    # -- the math ------------------------------------------------------------------------------
    def input_sines(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """S on the product grid ys × xs (domain coordinates): (len(ys)·len(xs), m), separably."""
        a = xs.unsqueeze(1) * self.omega[:, 0]
        b = ys.unsqueeze(1) * self.omega[:, 1] + self.phase
        sa, ca = torch.sin(a).unsqueeze(0), torch.cos(a).unsqueeze(0)
        s = sa * torch.cos(b).unsqueeze(1) + ca * torch.sin(b).unsqueeze(1)
        return s.reshape(-1, self.config.input_width)

    def latent_features(self, grids: list[torch.Tensor], row_taps: list, col_taps: list) -> torch.Tensor:
        """z on the product grid: (rows·columns, levels + neighbours), each grid read through its taps;
        the finest grid's neighbours through the extra taps (up, down, left, right) after the levels'."""
        lv = self.config.levels
        z = [cubic.sample(g, rt, ct).reshape(-1) for g, rt, ct in zip(grids, row_taps, col_taps, strict=False)]
        if self.config.neighbours:
            up, down, left, right = row_taps[lv], row_taps[lv + 1], col_taps[lv], col_taps[lv + 1]
            for rt, ct in ((up, col_taps[0]), (down, col_taps[0]), (row_taps[0], left), (row_taps[0], right)):
                z.append(cubic.sample(grids[0], rt, ct).reshape(-1))
        return torch.stack(z, dim=1)

    def synthesis(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = torch.cat((s, z * self.config.latent_step), dim=1)
        for w, b in zip(self.hidden, self.hidden_bias, strict=True):
            y = torch.sin(nn.functional.linear(y, w, b))
        return self.out(y)

    # -- sampling positions --------------------------------------------------------------------
    def axes(self, out_width: int, out_height: int, crop: Crop = FULL) -> tuple:
        """Domain coordinates and per-level cubic taps of an output grid over `crop`."""
        w, h = self.native
        xs, ys = self._domain_axes(out_width, out_height, crop)
        ux = _pixel_positions(out_width, w, crop.left, crop.right)
        uy = _pixel_positions(out_height, h, crop.top, crop.bottom)
        row_taps, col_taps = [], []
        for lv, (gh, gw) in enumerate(grid_shapes(w, h, self.config.levels)):
            scale = float(1 << lv)
            row_taps.append(cubic.taps(uy / scale - 0.5, gh))
            col_taps.append(cubic.taps(ux / scale - 0.5, gw))
        if self.config.neighbours:
            gh, gw = grid_shapes(w, h, 1)[0]
            row_taps += [cubic.taps(uy - 1.5, gh), cubic.taps(uy + 0.5, gh)]
            col_taps += [cubic.taps(ux - 1.5, gw), cubic.taps(ux + 0.5, gw)]
        return xs, ys, row_taps, col_taps

    def _domain_axes(self, out_width: int, out_height: int, crop: Crop = FULL) -> tuple[torch.Tensor, torch.Tensor]:
        """The sines' coordinates of the output grid's columns and rows (core/coords.py's pixel centres)."""
        sx, sy = extent(*self.native)
        return (axis_centres(out_width, sx, crop.left, crop.right),
                axis_centres(out_height, sy, crop.top, crop.bottom))

    def forward_grid(self, grids: list[torch.Tensor], axes: tuple) -> torch.Tensor:
        xs, ys, row_taps, col_taps = axes
        return self.synthesis(self.input_sines(xs, ys), self.latent_features(grids, row_taps, col_taps))

    def native_basis(self) -> tuple[torch.Tensor, torch.Tensor]:
        """sin and cos of <ω, x> on the native pixel grid: what training reuses every step, since
        sin(<ω, x> + φ) = sin<ω, x>·cos φ + cos<ω, x>·sin φ."""
        xs, ys = self._domain_axes(*self.native)
        arg = (torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(-1, 2).flip(1)
               @ self.omega.T)
        return torch.sin(arg), torch.cos(arg)

    def forward_native(self, grids: list[torch.Tensor], basis: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The image at its native size (what training fits): the same values as forward_grid there."""
        w, h = self.native
        z = [cubic.upsample(g, 1 << lv, h, w).reshape(-1) for lv, g in enumerate(grids)]
        if self.config.neighbours:
            # One native pixel away on the finest grid is a whole cell: the cubic reads the neighbour
            # itself, and the clamp at the border is a replicated edge.
            p = torch.nn.functional.pad(grids[0][:h, :w][None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
            z += [p[:-2, 1:-1].reshape(-1), p[2:, 1:-1].reshape(-1), p[1:-1, :-2].reshape(-1), p[1:-1, 2:].reshape(-1)]
        z = torch.stack(z, dim=1)
        s = basis[0] * torch.cos(self.phase) + basis[1] * torch.sin(self.phase)
        return self.synthesis(s, z)

    @torch.no_grad()
    def project(self) -> None:
        """TUNER's bounds after each optimizer step: the S columns of the first layer per column, the
        deeper layers by bound_deep; the latent columns and the output layer are free."""
        m = self.config.input_width
        first = self.hidden[0]
        bound = self.column_bound.unsqueeze(0)
        first[:, :m].clamp_(min=-bound, max=bound)
        for w in list(self.hidden)[1:]:
            w.clamp_(-self.config.bound_deep, self.config.bound_deep)

    def network_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Every parameter but the latents, by name (what the weight coder stores)."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("latents.")]


def _pixel_positions(n: int, native: int, lo: float, hi: float) -> torch.Tensor:
    """Centres of n output samples over the fraction [lo, hi] of a native axis, in native pixels."""
    i = torch.arange(n, dtype=torch.float64)
    return native * (lo + (hi - lo) * (i + 0.5) / n)


def _uniform(shape: tuple[int, ...], bound: float, g: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(shape, generator=g) * 2 - 1) * bound
