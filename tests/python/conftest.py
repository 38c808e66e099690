"""Shared set-up of the Python tests: the plugin library the tiny jobs load, and the
tiny job itself (the SmallJob of tests/src/lib.rs), as a dict and as a TOML file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def target_dir() -> Path:
    """Where cargo put the workspace's libraries (as tests/src/lib.rs finds it)."""
    env = os.environ.get("ESPER_TARGET_DIR")
    return Path(env) if env else REPO / "target" / "debug"


@pytest.fixture(scope="session")
def norm_plugin() -> Path:
    path = target_dir() / "libesper_norm.so"
    if not path.is_file():
        pytest.fail(f"{path} is not built; build the workspace first (cargo build --workspace, as scripts/test.sh does)")
    return path


def small_job(plugin: Path, out: Path, epochs: int = 3) -> dict:
    """A tiny CPU job: a norm seed scheduled into r0c1 before epoch 1, permissive gates,
    a 2-epoch alpha ramp, the controller off; seconds an epoch on a small CPU."""
    return {
        "device": "cpu",
        "slots": ["r0c1"],
        "plugins": [{"path": str(plugin)}],
        "host": {"base_channels": 8, "memory_format": "channels_last"},
        "data": {"kind": "synthetic", "train_size": 256, "val_size": 128},
        "training": {"epochs": epochs, "batch_size": 64, "gradient_every": 2},
        "slot": {"blend_tempo": 2},
        "lifecycle": {
            "gates": {"mode": "permissive", "min_blending_epochs": 1, "min_gradient_health_for_blending": 0.0},
            "controller": {"enabled": False},
            "schedule": [{"epoch": 1, "slot": "r0c1", "blueprint": "norm"}],
        },
        "output": {"dir": str(out)},
    }


def env_job(plugin: Path, epochs: int = 3) -> dict:
    """The tiny job for environments and controllers: small_job's, smaller data (two steps
    an epoch), no schedule, the heuristic off (the policy decides); under a second a run."""
    job = small_job(plugin, Path("unused"), epochs)
    job["data"].update(train_size=128, val_size=64)
    del job["lifecycle"]["schedule"], job["output"]
    return job


@pytest.fixture
def tiny(norm_plugin: Path) -> dict:
    return env_job(norm_plugin)


@pytest.fixture
def job(norm_plugin: Path, tmp_path: Path) -> dict:
    return small_job(norm_plugin, tmp_path / "out")


def without_timings(record: dict) -> dict:
    """An epoch's record less what the clock decides."""
    return {k: v for k, v in record.items() if k not in ("seconds", "train_seconds")}
