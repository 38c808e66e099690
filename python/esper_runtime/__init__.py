"""The Esper seed runtime from Python.

``Run(config)`` starts a training run of a config (a path to a TOML file, or a dict of
the same keys); ``run.step_epoch()`` runs one epoch and returns its record.
``run.parameters()`` and ``run.seed_parameters(slot)`` give the model's tensors as torch
tensors sharing memory with the runtime. ``run.observe()``, ``run.observe_vector()`` and
``run.act(decision)`` (or ``Run(config, controller=fn)``) make the lifecycle's decisions
from Python; ``esper_runtime.gym.SeedEnv`` is a gymnasium environment over runs. Errors of the runtime arrive as
``EsperError`` subclasses carrying its message. See docs/src/guide/python.md.
"""

from esper_runtime._native import (
    CheckpointError,
    ConfigError,
    EsperError,
    PluginError,
    Run,
    RunError,
    feature_len,
)

__all__ = ["CheckpointError", "ConfigError", "EsperError", "PluginError", "Run", "RunError", "feature_len"]
