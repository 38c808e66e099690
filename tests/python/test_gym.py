"""esper_runtime.gym.SeedEnv: gymnasium's own checker, episodes, rewards, masks,
registration and vectorized environments."""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from conftest import small_job
from gymnasium.utils.env_checker import check_env

import esper_runtime as er
from esper_runtime.gym import ENV_ID, SeedEnv, decision_of

WAIT, GROW, ADVANCE = (0, 0, 0), (1, 0, 0), (2, 0, 0)

# What check_env says of any environment of an unbounded Box made without gymnasium.make.
EXPECTED_WARNINGS = ("minimum value is -infinity", "maximum value is infinity", "alternative render modes")


def test_gymnasiums_env_checker_passes(tiny: dict) -> None:
    env = SeedEnv(tiny, epochs=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    others = [str(w.message) for w in caught if not any(e in str(w.message) for e in EXPECTED_WARNINGS)]
    assert others == []
    env.close()


def test_the_spaces_come_from_the_run(tiny: dict) -> None:
    env = SeedEnv(tiny)
    assert (env.slots, env.blueprints, env.objective) == (["r0c1"], ["cnn:norm"], "accuracy")
    assert env.observation_space.shape == (er.feature_len(1, 1),)
    assert env.observation_space.dtype == np.float32
    assert env.action_space.nvec.tolist() == [5, 1, 1]
    assert decision_of(GROW, env.slots, env.blueprints) == {"op": "germinate", "slot": "r0c1", "blueprint": "cnn:norm"}
    assert decision_of((4, 0, 0), env.slots, env.blueprints) == {"op": "prune", "slot": "r0c1"}


def test_an_episode_is_a_run_and_ends_at_its_last_epoch(tiny: dict) -> None:
    env = SeedEnv(tiny)
    observation, info = env.reset(seed=3)
    assert info["epoch"] == 0 and observation[0] == 0.0
    folder = env.run.run_dir
    steps = []
    terminated = False
    while not terminated:
        observation, reward, terminated, truncated, info = env.step(WAIT)
        assert not truncated and np.isfinite(reward)
        steps.append(info["epoch"])
    assert steps == [1, 2, 3] and observation[0] == 3.0
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(WAIT)
    env.reset(seed=3)
    second = env.run.run_dir
    assert second != folder and not Path(folder).exists(), "each episode a fresh run, the last removed"
    assert Path(second).is_dir()
    env.close()
    assert not Path(second).exists()


def test_reset_seeds_the_run(tiny: dict) -> None:
    env = SeedEnv(tiny)
    returns = []
    for seed in (5, 5, 6):
        env.reset(seed=seed)
        returns.append(env.step(GROW)[4]["val_loss"])
    assert returns[0] == returns[1] != returns[2]


def test_an_illegal_action_is_refused_and_costs_the_penalty(tiny: dict) -> None:
    a, b = SeedEnv(tiny, illegal_penalty=0.25), SeedEnv(tiny, illegal_penalty=0.25)
    a.reset(seed=1)
    b.reset(seed=1)
    _, waited, *_ = a.step(WAIT)
    _, refused, _, _, info = b.step(ADVANCE)  # nothing to advance in a DORMANT slot
    assert info["refused"] == 1 and "decision_refused" in info["events"]
    assert refused == pytest.approx(waited - 0.25, abs=1e-12), "the epoch is the wait's"


def test_the_reward_is_the_accuracy_change_less_the_rent(tiny: dict) -> None:
    free, rented = SeedEnv(tiny, rent=0.0), SeedEnv(tiny, rent=2.0)
    for env in (free, rented):
        env.reset(seed=1)
    first = [env.step(GROW) for env in (free, rented)]
    second = [env.step(WAIT) for env in (free, rented)]
    o = rented.run.observe()
    ratio = o["seed_parameters"] / o["host_parameters"]
    assert ratio > 0
    assert first[0][1] == 0.0, "no change at the first epoch, no rent"
    delta = second[0][4]["val_accuracy"] - first[0][4]["val_accuracy"]
    assert second[0][1] == pytest.approx(delta)
    assert second[1][1] == pytest.approx(delta - 2.0 * ratio)


def test_a_reward_function_and_the_loss_reward(tiny: dict) -> None:
    seen = []
    env = SeedEnv(tiny, rent=0.0, reward=lambda prev, rec: seen.append((prev, rec)) or 7.0)
    env.reset(seed=1)
    assert env.step(WAIT)[1] == 7.0 and env.step(WAIT)[1] == 7.0
    assert seen[0][0] is None and seen[1][0] == seen[0][1]
    loss = SeedEnv(tiny, rent=0.0, reward="loss")
    loss.reset(seed=1)
    first = loss.step(WAIT)[4]["val_loss"]
    _, reward, _, _, info = loss.step(WAIT)
    assert reward == pytest.approx(first - info["val_loss"])
    with pytest.raises(ValueError, match="reward='bleu'"):
        SeedEnv(tiny, reward="bleu")


def test_masks_come_in_info_and_from_action_masks(tiny: dict) -> None:
    env = SeedEnv(tiny)
    _, info = env.reset(seed=1)
    masks = info["action_masks"]
    assert masks["op"].tolist() == [True, True, False, False, False]
    assert masks["slot"].shape == (5, 1) and masks["blueprint"].tolist() == [True]
    assert env.action_masks().tolist() == [True, True, False, False, False, True, True]
    _, _, _, _, info = env.step(GROW)
    assert info["action_masks"]["op"].tolist() == [True, False, True, False, True]
    assert env.action_masks().tolist() == [True, False, True, False, True, True, True], "no blueprint head: all true"


def test_the_config_controller_decides_when_asked(norm_plugin: Path, tmp_path: Path) -> None:
    job = small_job(norm_plugin, tmp_path / "unused")
    job["data"].update(train_size=128, val_size=64)
    heuristic = SeedEnv(job, controller="config")
    heuristic.reset(seed=1)
    assert heuristic.step(WAIT)[4]["events"][0] == "germinated", "the config's schedule"
    external = SeedEnv(job)
    external.reset(seed=1)
    assert external.step(WAIT)[4]["events"] == []


def test_the_environment_is_registered(tiny: dict) -> None:
    env = gymnasium.make(ENV_ID, config=tiny, epochs=2)
    assert isinstance(env.unwrapped, SeedEnv)
    env.reset(seed=1)
    assert env.step(np.array(WAIT))[4]["epoch"] == 1
    env.close()


def test_async_vector_envs_step_each_in_its_process(tiny: dict) -> None:
    fns = [functools.partial(SeedEnv, tiny, epochs=2)] * 2
    envs = gymnasium.vector.AsyncVectorEnv(fns, context="spawn")
    try:
        observations, infos = envs.reset(seed=[1, 2])
        assert observations.shape == (2, er.feature_len(1, 1))
        actions = np.array([GROW, WAIT])
        _, rewards, terminated, _, infos = envs.step(actions)
        assert rewards.shape == (2,) and not terminated.any()
        assert infos["epoch"].tolist() == [1, 1]
        _, _, terminated, _, _ = envs.step(np.array([WAIT, WAIT]))
        assert terminated.all(), "two epochs each"
        pids = [p.pid for p in envs.processes]
        assert len(set(pids)) == 2 and os.getpid() not in pids
    finally:
        envs.close()
