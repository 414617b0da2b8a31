"""The configuration that rebuilds a network. It travels in every blob header, so it is plain data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from tuner_model.core.errors import ConfigError

ARCHS = ("tuner", "siren", "ffm")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "tuner"
    channels: int = 3
    input_width: int = 192  # m: input neurons (TUNER: frozen frequencies, fundamentals included)
    hidden: tuple[int, ...] = field(default=(192,))  # widths of the sinusoidal hidden layers
    # TUNER: the input layer
    period: float = 4.0  # p: ω = (2π/p)·k; the image spans [-1, 1] on its longer side
    bandlimit: int = 64  # B, integer k units (k·2/p cycles across the longer side)
    block_limit: int = 10  # L
    low_fraction: float = 0.7  # ρ
    freq_seed: int = 0
    # TUNER: bounded hidden layer (Theorem 2)
    bound_low: float = 1.0  # c_L, columns with max|k| <= L
    bound_high: float = 0.6  # c_H, the other columns
    bound_deep: float = 1.0  # scalar bound on the entries of any further hidden layer
    learn_bounds: bool = False  # W = c·tanh(s·V) with trainable c, instead of a clamp
    bound_penalty: float = 2e-5  # λ on mean|c| when learn_bounds
    hidden_omega: float = 30.0  # ω_h: stored V is scaled by ω_h in the forward pass
    # baselines
    first_omega: float = 30.0  # SIREN's ω0
    ffm_sigma: float = 10.0  # FFM: std of the Gaussian frequencies, cycles per unit length

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown architecture {self.arch!r}; expected one of {', '.join(ARCHS)}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if not 2 <= self.input_width <= 8192:
            raise ConfigError(f"input width must be in 2..8192, got {self.input_width}")
        hidden = tuple(int(h) for h in self.hidden)
        object.__setattr__(self, "hidden", hidden)
        if not 1 <= len(hidden) <= 8 or not all(1 <= h <= 8192 for h in hidden):
            raise ConfigError("hidden must list 1..8 widths, each in 1..8192")
        if not 0.5 <= self.period <= 1e4:
            raise ConfigError(f"period must be in [0.5, 1e4], got {self.period}")
        for name in ("bound_low", "bound_high", "bound_deep"):
            v = getattr(self, name)
            if not 0.0 < v <= 100.0:
                raise ConfigError(f"{name} must be in (0, 100], got {v}")
        if not 0.0 < self.hidden_omega <= 1e4 or not 0.0 < self.first_omega <= 1e4:
            raise ConfigError("omega factors must be in (0, 1e4]")
        if self.arch == "ffm" and self.input_width % 2:
            raise ConfigError("FFM needs an even input width (sin and cos features)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        if not isinstance(d, dict):
            raise ConfigError("model configuration must be an object")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model configuration fields: {', '.join(sorted(unknown))}")
        try:
            return cls(**d)
        except TypeError as e:  # wrong value types from a hostile header
            raise ConfigError(f"bad model configuration: {e}") from None
