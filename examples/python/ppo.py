"""A compact PPO over esper_runtime.gym.SeedEnv in plain PyTorch, CleanRL-style: an
actor-critic MLP with three masked categorical heads (operation, slot, blueprint),
rollouts from vectorized environments, GAE, the clipped objective.

Each update collects one whole episode from every environment (an episode is a run of
`--epochs` epochs), then optimizes. A few updates show the loop; learning a useful
controller takes far more episodes than this runs by default.

    python examples/python/ppo.py [--updates U] [--num-envs N] [--epochs E] [--async] [--smoke]
"""

from __future__ import annotations

import argparse
import functools
import time

import gymnasium
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical
from tiny_job import tiny_job

from esper_runtime.gym import OPS, SeedEnv

GERMINATE = OPS.index("germinate")


def layer(n_in: int, n_out: int, std: float = np.sqrt(2)) -> nn.Linear:
    linear = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(linear.weight, std)
    nn.init.zeros_(linear.bias)
    return linear


def sample(dist: Categorical, generator: torch.Generator) -> torch.Tensor:
    return torch.multinomial(dist.probs, 1, generator=generator).squeeze(-1)


def masked(logits: torch.Tensor, mask: torch.Tensor) -> Categorical:
    """A categorical over the values `mask` allows (every value where it allows none)."""
    mask = mask | ~mask.any(dim=-1, keepdim=True)
    return Categorical(logits=logits.masked_fill(~mask, -1e8))


class Agent(nn.Module):
    def __init__(self, n_features: int, n_slots: int, n_blueprints: int, hidden: int = 64) -> None:
        super().__init__()
        self.critic = nn.Sequential(
            layer(n_features, hidden), nn.Tanh(), layer(hidden, hidden), nn.Tanh(), layer(hidden, 1, 1.0)
        )
        self.trunk = nn.Sequential(layer(n_features, hidden), nn.Tanh(), layer(hidden, hidden), nn.Tanh())
        self.heads = nn.ModuleList(layer(hidden, n, 0.01) for n in (len(OPS), n_slots, n_blueprints))

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x).squeeze(-1)

    def act(
        self,
        x: torch.Tensor,
        masks: dict[str, torch.Tensor],
        action: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ):
        """A sampled (or the given) action, its log-probability and entropy, and the value.
        The slot head is masked by the chosen operation's row of the slot mask; the heads an
        operation does not use add nothing to the log-probability. Samples come from
        `generator`: the runtime re-seeds libtorch's global generator (torch's own, in this
        process) when a run starts and at every epoch."""
        h = self.trunk(x)
        op_logits, slot_logits, blueprint_logits = (head(h) for head in self.heads)
        op_dist = masked(op_logits, masks["op"])
        op = sample(op_dist, generator) if action is None else action[:, 0]
        slot_mask = masks["slot"][torch.arange(len(op)), op]
        slot_dist = masked(slot_logits, slot_mask)
        blueprint_dist = masked(blueprint_logits, masks["blueprint"])
        if action is None:
            action = torch.stack([op, sample(slot_dist, generator), sample(blueprint_dist, generator)], dim=1)
        uses_slot = (op != 0).float()
        uses_blueprint = (op == GERMINATE).float()
        log_prob = (
            op_dist.log_prob(op)
            + uses_slot * slot_dist.log_prob(action[:, 1])
            + uses_blueprint * blueprint_dist.log_prob(action[:, 2])
        )
        entropy = op_dist.entropy() + uses_slot * slot_dist.entropy() + uses_blueprint * blueprint_dist.entropy()
        return action, log_prob, entropy, self.value(x)


def as_torch(masks: dict) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.asarray(masks[k]), dtype=torch.bool) for k in ("op", "slot", "blueprint")}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--num-envs", type=int, default=4)
    p.add_argument("--epochs", type=int, default=6, help="epochs of each episode's run (steps per rollout)")
    p.add_argument("--async", dest="use_async", action="store_true", help="each environment in its own process")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--gae-lambda", type=float, default=0.95)
    p.add_argument("--update-epochs", type=int, default=4)
    p.add_argument("--minibatches", type=int, default=2)
    p.add_argument("--clip-coef", type=float, default=0.2)
    p.add_argument("--ent-coef", type=float, default=0.01)
    p.add_argument("--vf-coef", type=float, default=0.5)
    p.add_argument("--max-grad-norm", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="2 updates of 2 environments, 3 epochs, smaller data")
    args = p.parse_args()
    if args.smoke:
        args.updates, args.num_envs, args.epochs = 2, 2, 3
    return args


def main() -> None:
    args = parse()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    job = tiny_job(args.epochs, smoke=args.smoke)
    make = functools.partial(SeedEnv, job)
    if args.use_async:
        # Spawned, not forked: a forked child of a process using libtorch can deadlock.
        envs = gymnasium.vector.AsyncVectorEnv([make] * args.num_envs, context="spawn")
    else:
        envs = gymnasium.vector.SyncVectorEnv([make] * args.num_envs)
    n_features = envs.single_observation_space.shape[0]
    n_slots, n_blueprints = envs.single_action_space.nvec[1:]
    agent = Agent(n_features, int(n_slots), int(n_blueprints))
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)
    steps, n = args.epochs, args.num_envs
    print(f"ppo: {n} environments, {args.updates} updates of {steps} steps, {n_features} features", flush=True)
    started = time.monotonic()
    for update in range(1, args.updates + 1):
        obs_buf = torch.zeros(steps, n, n_features)
        act_buf = torch.zeros(steps, n, 3, dtype=torch.long)
        logp_buf, rew_buf, val_buf = torch.zeros(steps, n), torch.zeros(steps, n), torch.zeros(steps, n)
        mask_bufs: list[dict[str, torch.Tensor]] = []
        # One episode per environment: every run has `steps` epochs, so all end together.
        obs, info = envs.reset(seed=[args.seed * 1000 + update * n + i for i in range(n)])
        obs, masks = torch.as_tensor(obs), as_torch(info["action_masks"])
        for t in range(steps):
            with torch.no_grad():
                action, logp, _, value = agent.act(obs, masks, generator=generator)
            obs_buf[t], act_buf[t], logp_buf[t], val_buf[t] = obs, action, logp, value
            mask_bufs.append(masks)
            next_obs, reward, terminated, truncated, info = envs.step(action.numpy())
            rew_buf[t] = torch.as_tensor(reward, dtype=torch.float32)
            obs, masks = torch.as_tensor(next_obs), as_torch(info["action_masks"])
        assert terminated.all() or truncated.all(), "an episode is one run of --epochs epochs"
        # GAE; the last step is terminal.
        advantages = torch.zeros(steps, n)
        last = torch.zeros(n)
        for t in reversed(range(steps)):
            next_value = val_buf[t + 1] if t + 1 < steps else torch.zeros(n)
            not_last = 1.0 if t + 1 < steps else 0.0
            delta = rew_buf[t] + args.gamma * next_value * not_last - val_buf[t]
            last = delta + args.gamma * args.gae_lambda * not_last * last
            advantages[t] = last
        returns = advantages + val_buf
        b_obs, b_act = obs_buf.reshape(-1, n_features), act_buf.reshape(-1, 3)
        b_logp, b_adv, b_ret = logp_buf.reshape(-1), advantages.reshape(-1), returns.reshape(-1)
        b_masks = {k: torch.stack([m[k] for m in mask_bufs]).flatten(0, 1) for k in mask_bufs[0]}
        batch = steps * n
        size = max(batch // args.minibatches, 1)
        for _ in range(args.update_epochs):
            for idx in torch.randperm(batch, generator=generator).split(size):
                _, logp, entropy, value = agent.act(b_obs[idx], {k: v[idx] for k, v in b_masks.items()}, b_act[idx])
                ratio = (logp - b_logp[idx]).exp()
                adv = b_adv[idx]
                if len(idx) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)).mean()
                v_loss = 0.5 * ((value - b_ret[idx]) ** 2).mean()
                loss = pg_loss - args.ent_coef * entropy.mean() + args.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
        episode_return = rew_buf.sum(0).mean().item()
        print(
            f"update {update}/{args.updates}: mean return {episode_return:.3f}, policy loss {pg_loss.item():.4f}, "
            f"value loss {v_loss.item():.4f}, entropy {entropy.mean().item():.3f}, "
            f"{(update * batch) / (time.monotonic() - started):.1f} steps/s",
            flush=True,
        )
    envs.close()


if __name__ == "__main__":
    main()
