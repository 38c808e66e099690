"""The tiny job the Python examples learn on: the built-in default job (a small CNN on
the embedded synthetic image set, two slots, the shipped blueprints) scaled down to
seconds an episode on two CPU cores, with the built-in heuristic quick to act.

The shipped plugins are taken from the workspace's build folder (`cargo build`):
`$ESPER_TARGET_DIR` or `<repo>/target/debug`.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLUGINS = ("libesper_cnn.so", "libesper_norm.so")


def plugin_paths() -> list[str]:
    target = Path(os.environ.get("ESPER_TARGET_DIR") or REPO / "target" / "debug")
    paths = [target / name for name in PLUGINS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"the shipped plugins are not built ({', '.join(missing)}): run `cargo build` first")
    return [str(p) for p in paths]


def tiny_job(epochs: int = 6, smoke: bool = False) -> dict:
    """The job as a config dict (see docs/src/config.md); `smoke`: even smaller data."""
    train, val = (128, 64) if smoke else (512, 256)
    return {
        "device": "cpu",
        "slots": ["r0c1", "r1c1"],
        "plugins": [{"path": p} for p in plugin_paths()],
        "host": {"base_channels": 8},
        "data": {"kind": "synthetic", "train_size": train, "val_size": val},
        "training": {"epochs": epochs, "batch_size": 64},
        "slot": {"blend_tempo": 2},
        "lifecycle": {
            "gates": {"mode": "permissive", "min_blending_epochs": 1},
            # The heuristic (used when the environment keeps the config's controller):
            # germinates from epoch 1 on whenever accuracy gains under 2 points an epoch.
            "controller": {"max_live_seeds": 2, "min_epoch": 1, "plateau_epochs": 1, "plateau_delta": 2.0},
        },
    }
