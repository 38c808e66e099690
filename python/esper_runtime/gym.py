"""A gymnasium environment over runs of the Esper runtime: ``SeedEnv``.

One episode is one run (``reset`` starts a fresh run in a temporary folder), one step is
one decision followed by one epoch. The observation is the runtime's flat feature
vector (``Run.observe_vector``, the layout of docs/src/guide/controllers.md); the action
is three heads, ``(op, slot, blueprint)``, a ``MultiDiscrete``; the masks of the
decisions legal now are in ``info["action_masks"]`` and ``env.action_masks()``. See
docs/src/guide/learning.md.

Importing this module registers the environment as ``esper_runtime/SeedEnv-v0``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any, Literal

import gymnasium
import numpy as np
from gymnasium import spaces

from esper_runtime import Run, feature_len

__all__ = ["ENV_ID", "OPS", "SeedEnv", "decision_of"]

ENV_ID = "esper_runtime/SeedEnv-v0"

#: The operation head, in the runtime's mask order.
OPS = ("wait", "germinate", "advance", "continue", "prune")

#: A reward function: the previous epoch's record (``None`` at the first step) and this one's.
RewardFn = Callable[[Mapping[str, Any] | None, Mapping[str, Any]], float]


def decision_of(action: Any, slots: list[str], blueprints: list[str]) -> dict[str, Any]:
    """The decision action ``(op, slot, blueprint)`` stands for (indices into ``OPS``,
    ``slots`` and ``blueprints``); the heads an operation does not use are ignored."""
    op, slot, blueprint = (int(a) for a in action)
    name = OPS[op]
    if name == "wait":
        return {"op": "wait"}
    if name == "germinate":
        return {"op": "germinate", "slot": slots[slot], "blueprint": blueprints[blueprint]}
    return {"op": name, "slot": slots[slot]}


def _accuracy_delta(previous: Mapping[str, Any] | None, record: Mapping[str, Any]) -> float:
    return 0.0 if previous is None else float(record["val_accuracy"]) - float(previous["val_accuracy"])


def _loss_delta(previous: Mapping[str, Any] | None, record: Mapping[str, Any]) -> float:
    return 0.0 if previous is None else float(previous["val_loss"]) - float(record["val_loss"])


class SeedEnv(gymnasium.Env):
    """Episodes of runs of ``config`` (a path to a TOML run config or a dict of one).

    ``reward``: ``"auto"`` (the run's objective: the change in validation accuracy, in
    points, for images; minus the change in validation loss for text), ``"accuracy"``,
    ``"loss"``, or a function of the previous epoch's record (``None`` at the first
    step) and this one's. From it the step's reward subtracts the parameter rent,
    ``rent * seed_parameters / host_parameters`` (all live seeds, after the epoch), and
    ``illegal_penalty`` for each decision the runtime refused (a refused decision is never
    applied: the step is a wait).

    ``controller``: ``"external"`` (the default) leaves every decision to the actions;
    ``"config"`` keeps the config's controller (the built-in heuristic, or a controller
    plugin) deciding as well, so an episode of wait actions is that controller's run.

    ``epochs`` and ``run_root`` (the folder the episodes' temporary run folders go in)
    are optional. Episodes write no checkpoints.

    Each run seeds libtorch's global generator (``torch.manual_seed``'s, in this process)
    when it starts and at every epoch: a policy in the same process should sample from a
    ``torch.Generator`` of its own.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        config: str | os.PathLike[str] | Mapping[str, Any],
        *,
        reward: Literal["auto", "accuracy", "loss"] | RewardFn = "auto",
        rent: float = 0.5,
        illegal_penalty: float = 1.0,
        controller: Literal["external", "config"] = "external",
        epochs: int | None = None,
        run_root: str | os.PathLike[str] | None = None,
    ) -> None:
        if controller not in ("external", "config"):
            raise ValueError(f'controller={controller!r}: expected "external" or "config"')
        self._config = dict(config) if isinstance(config, Mapping) else config
        self._rent = float(rent)
        self._illegal_penalty = float(illegal_penalty)
        self._controller = controller
        self._epochs = epochs
        self._run_root = run_root
        self._run: Run | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._previous: Mapping[str, Any] | None = None
        # A first run tells the shape of the spaces (slots, loaded blueprints, objective).
        probe = self._start(seed=None)
        observation = probe.observe()
        self.slots: list[str] = [s["slot"] for s in observation["slots"]]
        self.blueprints: list[str] = list(observation["blueprints"])
        self.objective: str = observation["objective"]
        self._close_run()
        self._reward = self._reward_fn(reward)
        n = feature_len(len(self.slots), len(self.blueprints))
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(n,), dtype=np.float32)
        self.action_space = spaces.MultiDiscrete([len(OPS), len(self.slots), max(len(self.blueprints), 1)])

    def _reward_fn(self, reward: str | RewardFn) -> RewardFn:
        if callable(reward):
            return reward
        kinds = {"accuracy": _accuracy_delta, "loss": _loss_delta}
        if reward == "auto":
            return kinds[self.objective]
        if reward not in kinds:
            raise ValueError(f'reward={reward!r}: expected "auto", "accuracy", "loss" or a function')
        return kinds[reward]

    def _start(self, seed: int | None) -> Run:
        self._close_run()
        self._folder = tempfile.TemporaryDirectory(prefix="esper-seedenv-", dir=self._run_root)
        self._run = Run(
            self._config,
            os.path.join(self._folder.name, "run"),
            epochs=self._epochs,
            seed=seed,
            checkpoint=False,
            controller=None if self._controller == "config" else "external",
        )
        return self._run

    def _close_run(self) -> None:
        if self._run is not None:
            self._run.close()
            self._run = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    @property
    def run(self) -> Run:
        """The episode's run (for its report, events and parameters)."""
        if self._run is None:
            raise RuntimeError("no episode under way: call reset() first")
        return self._run

    def _observe(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        features, masks = self.run.observe_vector()
        return features.numpy().copy(), {k: v.numpy().copy() for k, v in masks.items()}

    def action_masks(self) -> np.ndarray:
        """The legal values of each head, concatenated (``5 + slots + blueprints`` bools,
        as maskable PPO implementations take them): the operations legal now, the slots
        some legal non-wait operation can act on, the blueprints that can be germinated.
        A head with no legal value (nothing to act on) is all true: its value is unused.
        ``info["action_masks"]["slot"]`` has the slot mask per operation."""
        _, masks = self._observe()
        return _flat(masks)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        run_seed = seed if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
        self._start(run_seed)
        self._previous = None
        observation, masks = self._observe()
        return observation, {"epoch": 0, "action_masks": masks}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        run = self.run
        decision = decision_of(action, self.slots, self.blueprints)
        acted = run.act(decision)
        refused = sum(1 for e in acted if e["event"] == "decision_refused")
        record = run.step_epoch()
        if record is None:
            raise RuntimeError("the episode is over (its run's last epoch has run): call reset()")
        observation, masks = self._observe()
        after = run.observe()
        ratio = after["seed_parameters"] / max(after["host_parameters"], 1)
        reward = self._reward(self._previous, record) - self._rent * ratio - self._illegal_penalty * refused
        self._previous = record
        terminated = run.next_epoch > run.epochs
        info = {
            "epoch": record["epoch"],
            "val_loss": record["val_loss"],
            "val_accuracy": record["val_accuracy"],
            "decision": decision,
            "refused": refused,
            "events": [e["event"] for e in record["events"]],
            "action_masks": masks,
        }
        return observation, float(reward), terminated, False, info

    def close(self) -> None:
        self._close_run()
        super().close()


def _flat(masks: Mapping[str, np.ndarray]) -> np.ndarray:
    op = masks["op"].astype(bool)
    slot = masks["slot"][1:].any(axis=0)
    blueprint = masks["blueprint"].astype(bool)
    if not slot.any():
        slot = np.ones_like(slot)
    if not blueprint.any():
        blueprint = np.ones(max(len(blueprint), 1), bool)
    return np.concatenate([op, slot, blueprint])


gymnasium.register(id=ENV_ID, entry_point="esper_runtime.gym:SeedEnv")
