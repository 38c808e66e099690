"""K episodes of esper_runtime.gym.SeedEnv under a random legal policy and under the
built-in heuristic, and the mean return of each.

The random policy draws each head among the values its mask allows (the operation, then
a slot that operation may act on, then a blueprint for a germination). The heuristic's
episodes keep the config's controller in charge (`controller="config"`) and send only
waits, so each is the run the heuristic makes; both are scored by the same reward.

    python examples/python/random_vs_heuristic.py [--episodes K] [--epochs N] [--smoke]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from tiny_job import tiny_job

from esper_runtime.gym import SeedEnv


def random_legal_action(masks: dict, rng: np.random.Generator) -> np.ndarray:
    op = int(rng.choice(np.flatnonzero(masks["op"])))
    slots = np.flatnonzero(masks["slot"][op])
    slot = int(rng.choice(slots)) if len(slots) else 0
    blueprints = np.flatnonzero(masks["blueprint"])
    blueprint = int(rng.choice(blueprints)) if op == 1 and len(blueprints) else 0
    return np.array([op, slot, blueprint])


def episode(env: SeedEnv, seed: int, policy) -> tuple[float, int]:
    """The episode's return and how many seeds it germinated."""
    _, info = env.reset(seed=seed)
    total, germinated, done = 0.0, 0, False
    while not done:
        _, reward, terminated, truncated, info = env.step(policy(info["action_masks"]))
        total += reward
        germinated += info["events"].count("germinated")
        done = terminated or truncated
    return total, germinated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=3, help="episodes of each policy")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each episode's run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="one short episode each, on smaller data")
    args = parser.parse_args()
    if args.smoke:
        args.episodes, args.epochs = 1, 3
    job = tiny_job(args.epochs, smoke=args.smoke)
    rng = np.random.default_rng(args.seed)
    policies = {
        "random legal policy": (SeedEnv(job), lambda masks: random_legal_action(masks, rng)),
        "heuristic": (SeedEnv(job, controller="config"), lambda masks: np.zeros(3, dtype=np.int64)),
    }
    for name, (env, policy) in policies.items():
        started = time.monotonic()
        results = [episode(env, args.seed + k, policy) for k in range(args.episodes)]
        env.close()
        returns = [r for r, _ in results]
        seeds = sum(g for _, g in results)
        print(
            f"{name}: mean return {np.mean(returns):.3f} over {args.episodes} episode(s) "
            f"({seeds} seed(s) germinated, {time.monotonic() - started:.1f} s)"
        )


if __name__ == "__main__":
    main()
