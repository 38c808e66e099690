"""Checkpoints and resume: a resumed run's next epoch is bit for bit the uninterrupted one's."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import without_timings

import esper_runtime as er


def uninterrupted(job: dict, out: Path) -> list[dict]:
    with er.Run(dict(job, output={"dir": str(out)})) as run:
        return [run.step_epoch() for _ in range(3)]


def test_a_resumed_run_continues_exactly(job: dict, tmp_path: Path) -> None:
    whole = uninterrupted(job, tmp_path / "whole")
    with er.Run(job) as run:
        first_two = [run.step_epoch(), run.step_epoch()]
    assert [without_timings(r) for r in first_two] == [without_timings(r) for r in whole[:2]]
    with er.Run.resume(job["output"]["dir"]) as resumed:
        assert resumed.next_epoch == 3
        third = resumed.step_epoch()
        assert without_timings(third) == without_timings(whole[2])
        assert [without_timings(r) for r in resumed.report()["epochs"]] == [without_timings(r) for r in whole]


def test_save_checkpoint_writes_a_run_folder_to_resume_from(job: dict, tmp_path: Path) -> None:
    whole = uninterrupted(job, tmp_path / "whole")
    job["output"]["checkpoint"] = False
    with er.Run(job) as run:
        with pytest.raises(er.CheckpointError, match="no epoch has run yet"):
            run.save_checkpoint()
        run.step_epoch()
        run.step_epoch()
        assert not (Path(job["output"]["dir"]) / "checkpoints").exists()
        saved = Path(run.save_checkpoint(tmp_path / "copy"))
    assert saved.parent == tmp_path / "copy" / "checkpoints"
    with er.Run.resume(tmp_path / "copy", epochs=4) as resumed:
        assert resumed.run_dir == tmp_path / "copy" and resumed.epochs == 4
        assert without_timings(resumed.step_epoch()) == without_timings(whole[2])


def test_resuming_nothing_raises_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(er.CheckpointError) as e:
        er.Run.resume(tmp_path)
    assert str(tmp_path) in str(e.value)
