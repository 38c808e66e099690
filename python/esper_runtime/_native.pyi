"""Type stubs of the extension module ``esper_runtime._native`` (re-exported by ``esper_runtime``)."""

import os
from types import TracebackType
from typing import Any, Callable, Literal, Mapping, Sequence

import torch

class EsperError(Exception):
    """Any error of the Esper runtime."""

class ConfigError(EsperError):
    """A run config that cannot be read, parsed or checked (the message names the file and line)."""

class PluginError(EsperError):
    """A plugin library that cannot be loaded or used."""

class RunError(EsperError):
    """A run that cannot start or go on."""

class CheckpointError(RunError):
    """A checkpoint that cannot be written, found or read."""

def feature_len(slots: int, blueprints: int) -> int:
    """The length of the observation vector of a run with ``slots`` slots and ``blueprints`` loaded blueprints."""

#: A decision: a dict tagged by ``op`` (see docs/src/guide/controllers.md).
_Decision = Mapping[str, Any]
#: What a controller callable is given (the observation) and returns.
_Controller = Callable[[dict[str, Any]], _Decision | Sequence[_Decision] | None]

class Run:
    """A training run of the Esper runtime, driven an epoch at a time."""

    def __new__(
        cls,
        config: str | os.PathLike[str] | Mapping[str, Any],
        run_dir: str | os.PathLike[str] | None = None,
        *,
        epochs: int | None = None,
        seed: int | None = None,
        checkpoint: bool | None = None,
        controller: _Controller | Literal["external"] | None = None,
    ) -> Run: ...
    @staticmethod
    def resume(
        run_dir: str | os.PathLike[str],
        *,
        epochs: int | None = None,
        controller: _Controller | Literal["external"] | None = None,
    ) -> Run: ...
    def step_epoch(self) -> dict[str, Any] | None: ...
    @property
    def next_epoch(self) -> int: ...
    @property
    def epochs(self) -> int: ...
    @property
    def run_dir(self) -> os.PathLike[str]: ...
    @property
    def slots(self) -> list[str]: ...
    @property
    def controller(self) -> str: ...
    def observe(self) -> dict[str, Any]: ...
    def observe_vector(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...
    def act(self, decisions: _Decision | Sequence[_Decision]) -> list[dict[str, Any]]: ...
    def report(self) -> dict[str, Any]: ...
    def events(self) -> list[dict[str, Any]]: ...
    def save_checkpoint(self, run_dir: str | os.PathLike[str] | None = None) -> os.PathLike[str]: ...
    def parameters(self) -> dict[str, torch.Tensor]: ...
    def seed_parameters(self, slot: str) -> dict[str, torch.Tensor]: ...
    def parameter_sums(self, slot: str | None = None) -> dict[str, float]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Run: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...
