"""On a CUDA device: several runs (the environments of a vector env) share one GPU in one
process, each stepping in turn, and the tensors Python gets are the runtime's CUDA
memory. Skipped, and counted as skipped, without CUDA (scripts/test-gpu.sh runs it)."""

from __future__ import annotations

import pytest
import torch

import esper_runtime
from conftest import small_job

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: run scripts/test-gpu.sh")


def test_runs_share_one_gpu_and_their_tensors_are_its_memory(norm_plugin, tmp_path):
    runs = []
    for i in range(3):
        job = small_job(norm_plugin, tmp_path / f"run-{i}", epochs=2)
        job["device"] = "cuda"
        runs.append(esper_runtime.Run(job, seed=i))
    for _ in range(2):
        for run in runs:
            record = run.step_epoch()
            assert record is not None and record["val_loss"] == record["val_loss"]  # finite, not NaN
    for run in runs:
        assert run.step_epoch() is None
        params = run.parameters()
        first = next(iter(params.values()))
        assert first.is_cuda, first.device
        assert first.data_ptr() == next(iter(run.parameters().values())).data_ptr(), "shared, not copied"
        before = run.parameter_sums()
        first.add_(1.0)
        assert run.parameter_sums() != before, "the runtime sees Python's in-place change"
        run.close()
