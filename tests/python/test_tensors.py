"""Parameters reach Python as torch tensors that share the runtime's memory."""

from __future__ import annotations

import pytest
import torch
from conftest import without_timings

import esper_runtime as er


def test_host_parameters_are_the_runtimes_memory_not_copies(job: dict) -> None:
    run = er.Run(job)
    params = run.parameters()
    assert params and all(isinstance(p, torch.Tensor) for p in params.values())
    again = run.parameters()
    assert {n: p.data_ptr() for n, p in params.items()} == {n: p.data_ptr() for n, p in again.items()}
    name, p = next(iter(params.items()))
    sums = run.parameter_sums()
    assert set(sums) == set(params)
    assert sums[name] == pytest.approx(p.double().sum().item())
    p.zero_()
    assert run.parameter_sums()[name] == 0.0
    p.add_(1)
    assert run.parameter_sums()[name] == p.numel()
    assert again[name].sum().item() == p.numel(), "every view of it sees the change"


def test_a_change_from_python_changes_the_next_epoch(job: dict, tmp_path) -> None:
    plain = er.Run(dict(job, output={"dir": str(tmp_path / "plain")}))
    changed = er.Run(job)
    assert without_timings(plain.step_epoch()) == without_timings(changed.step_epoch())
    for p in changed.parameters().values():
        p.mul_(0.5)
    a, b = plain.step_epoch(), changed.step_epoch()
    assert a["train_loss"] != b["train_loss"], "the runtime trained on the halved weights"


def test_seed_parameters_share_memory_and_name_their_slot(job: dict) -> None:
    run = er.Run(job)
    assert run.seed_parameters("r0c1") == {}, "no seed before the first epoch opens"
    run.step_epoch()
    seeds = run.seed_parameters("r0c1")
    assert seeds and all(n.startswith(("seed.", "gate.")) for n in seeds)
    name, p = next(iter(seeds.items()))
    p.fill_(2.0)
    assert run.parameter_sums("r0c1")[name] == 2.0 * p.numel()
    with pytest.raises(KeyError, match="r9c9.*r0c1"):
        run.seed_parameters("r9c9")


def test_tensors_outlive_the_run(job: dict) -> None:
    run = er.Run(job)
    p = next(iter(run.parameters().values()))
    run.close()
    del run
    p.add_(1)
    assert torch.isfinite(p).all()
