"""ms per float-fit step of the encoder's networks on a 768×512 image, on the ½ × ½ sub-grid the effort-4 fit
uses. To compare two versions of the code, run it once per checkout (PYTHONPATH=<other worktree> for the
other) and alternate the runs: timings on a shared 2-core machine drift.

    python scripts/deep_step_time.py 3x153,4x65,1x264 [--image ../shared/data/kodak/kodim01.png]
"""

from __future__ import annotations

import argparse
import time

import tuner_model  # before torch: on an AMD CPU it puts MKL's fast path in place (core/mkl_dispatch.py)

# isort: split
import torch

from tuner_model.core import mkl_dispatch
from tuner_model.core.image_io import load_image
from tuner_model.models import build_model
from tuner_model.rate.plan import default_config
from tuner_model.train.fit import FitOptions, make_objective


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, obj) -> None:
    opt.zero_grad(set_to_none=True)
    obj.losses(model, dict(model.named_parameters()), 0, None)  # backpropagates itself
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("networks", help="comma-separated DEPTHxWIDTH")
    ap.add_argument("--image", default="/work/shared/data/kodak/kodim01.png")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    img = load_image(args.image)
    h, w = img.shape[:2]
    for spec in args.networks.split(","):
        depth, width = (int(x) for x in spec.split("x"))
        model = build_model(default_config(w, h, img.shape[2], width, depth), seed=0).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        obj = make_objective(model, [img], FitOptions(path="grid", batch_rows=h // 2, batch_cols=w // 2),
                             torch.device("cpu"), False)

        for _ in range(3):
            _step(model, opt, obj)
        t = time.perf_counter()
        for _ in range(args.steps):
            _step(model, opt, obj)
        ms = (time.perf_counter() - t) / args.steps * 1e3
        print(f"{tuner_model.__file__} {depth}x{width}: {ms:.1f} ms/step (MKL dispatch fix: "
              f"{mkl_dispatch.installed()})", flush=True)


if __name__ == "__main__":
    main()
