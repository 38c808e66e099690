"""The Esper seed runtime from Python.

``Run(config)`` starts a training run of a config (a path to a TOML file, or a dict of
the same keys); ``run.step_epoch()`` runs one epoch and returns its record.
``run.parameters()`` and ``run.seed_parameters(slot)`` give the model's tensors as torch
tensors sharing memory with the runtime. Errors of the runtime arrive as
``EsperError`` subclasses carrying its message. See docs/src/guide/python.md.
"""

from esper_runtime._native import (
    CheckpointError,
    ConfigError,
    EsperError,
    PluginError,
    Run,
    RunError,
)

__all__ = ["CheckpointError", "ConfigError", "EsperError", "PluginError", "Run", "RunError"]
