"""Deciding the lifecycle from Python: the observation (as a dict and as a vector with
masks), decisions through run.act, and a Python callable as the run's controller."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import small_job

import esper_runtime as er

GROW = {"op": "germinate", "slot": "r0c1", "blueprint": "cnn:norm"}


def test_the_observation_is_the_documented_dict(tiny: dict, tmp_path: Path) -> None:
    run = er.Run(tiny, tmp_path, controller="external")
    o = run.observe()
    assert (o["version"], o["epoch"], o["epochs"], o["objective"]) == (1, 0, 3, "accuracy")
    assert o["free_slots"] == ["r0c1"] and o["blueprints"] == ["cnn:norm"] and o["history"] == []
    (slot,) = o["slots"]
    assert slot["stage"] == "DORMANT" and slot["germinable"] and slot["blueprint"] is None
    assert o["host_parameters"] > 0 and o["seed_parameters"] == 0
    run.act(GROW)
    run.step_epoch()
    o = run.observe()
    assert o["epoch"] == 1 and [h["epoch"] for h in o["history"]] == [1]
    assert o["slots"][0]["blueprint"] == "cnn:norm" and o["slots"][0]["stage"] != "DORMANT"
    assert o["seed_parameters"] == o["slots"][0]["seed_parameters"] > 0 and o["free_slots"] == []


def test_the_vector_has_the_layout_length_and_the_masks_follow_the_slot(tiny: dict, tmp_path: Path) -> None:
    run = er.Run(tiny, tmp_path, controller="external")
    features, masks = run.observe_vector()
    assert features.dtype == torch.float32 and features.shape == (er.feature_len(1, 1),)
    assert features[:2].tolist() == [0.0, 3.0], "epoch, epochs"
    assert masks["op"].tolist() == [True, True, False, False, False], "wait, germinate"
    assert masks["slot"].shape == (5, 1) and masks["slot"][1].tolist() == [True]
    assert masks["blueprint"].tolist() == [True]
    run.act(GROW)
    run.step_epoch()
    features, masks = run.observe_vector()
    assert features[0] == 1.0
    assert masks["op"].tolist() == [True, False, True, False, True], "wait, advance, prune"
    assert masks["blueprint"].tolist() == [False], "no free slot"


def test_act_applies_a_legal_decision_and_refuses_the_others(tiny: dict, tmp_path: Path) -> None:
    run = er.Run(tiny, tmp_path, controller="external")
    events = run.act(GROW)
    assert [(e["event"], e["slot"], e["epoch"]) for e in events] == [("germinated", "r0c1", 1)]
    refused = run.act([GROW, {"op": "advance", "slot": "r9c9"}, {"op": "prune"}, 7])
    assert [e["event"] for e in refused] == ["decision_refused"] * 4
    assert all(e["controller"] == "external" for e in refused)
    reasons = [e["reason"] for e in refused]
    assert "needs it DORMANT" in reasons[0] and "no such slot" in reasons[1], reasons
    assert reasons[2].startswith("not a decision") and "slot" in reasons[2], reasons
    assert reasons[3].startswith("not a decision"), reasons
    record = run.step_epoch()
    assert [e["event"] for e in record["events"]].count("decision_refused") == 4, "kept in the epoch's record"
    with pytest.raises(TypeError, match="not str"):
        run.act("germinate")


def test_a_python_controller_decides_every_epoch(tiny: dict, tmp_path: Path) -> None:
    seen: list[int] = []

    def policy(observation: dict) -> list[dict] | None:
        seen.append(observation["epoch"])
        return {0: [GROW], 1: [{"op": "prune", "slot": "r0c1", "reason": "mine"}]}.get(observation["epoch"])

    run = er.Run(tiny, tmp_path, controller=policy)
    assert run.controller == "python"
    records = [run.step_epoch() for _ in range(3)]
    assert seen == [0, 1, 2, 3], "before the first epoch and after each"
    first = records[0]["events"]
    assert first[0]["event"] == "germinated", first
    # The decisions after epoch 1 are epoch 1's events.
    assert [e["text"] for e in first if e["event"] == "pruned"] == ["r0c1: pruned (mine)"], first
    assert records[1]["slots"][0]["stage"] == "EMBARGOED"


def test_an_illegal_decision_of_the_callable_is_refused_naming_it(tiny: dict, tmp_path: Path) -> None:
    run = er.Run(tiny, tmp_path, controller=lambda o: {"op": "advance", "slot": "r0c1"})
    record = run.step_epoch()
    refused = [e for e in record["events"] if e["event"] == "decision_refused"]
    assert len(refused) == 2, "before epoch 1 and after it"
    assert all(e["controller"] == "python" and "cannot advance" in e["reason"] for e in refused), refused
    assert record["slots"][0]["stage"] == "DORMANT"


@pytest.mark.parametrize(
    "answer,reason",
    [
        (ValueError("boom"), "ValueError: boom"),
        (42, "TypeError: expected a decision"),
    ],
)
def test_a_failing_callable_is_contained_and_the_run_waits(tiny: dict, tmp_path: Path, answer, reason) -> None:
    def policy(observation: dict):
        if observation["epoch"] == 1:
            if isinstance(answer, Exception):
                raise answer
            return answer
        return None

    run = er.Run(tiny, tmp_path, controller=policy)
    records = [run.step_epoch() for _ in range(3)]
    assert [r["epoch"] for r in records] == [1, 2, 3], "the run goes on"
    failed = [e for e in run.events() if e["event"] == "controller_failed"]
    assert len(failed) == 1 and failed[0]["controller"] == "python", failed
    assert failed[0]["reason"].startswith(reason) and failed[0]["epoch"] == 1, failed


def test_the_config_controller_is_the_default_and_a_bad_one_is_refused(norm_plugin: Path, tmp_path: Path) -> None:
    job = small_job(norm_plugin, tmp_path / "a", epochs=1)
    run = er.Run(job)
    assert run.controller == "heuristic"
    assert run.step_epoch()["events"][0]["event"] == "germinated", "the schedule of the config's controller"
    with pytest.raises(ValueError, match="controller='tamiyo'"):
        er.Run(small_job(norm_plugin, tmp_path / "b"), controller="tamiyo")
    assert not (tmp_path / "b").exists(), "refused before the run folder is made"
    external = er.Run(small_job(norm_plugin, tmp_path / "c", epochs=1), controller="external")
    assert external.controller == "external"
    assert external.step_epoch()["events"] == [], "no schedule: decisions only through act"


def test_seed_and_checkpoint_replace_the_config(tiny: dict, tmp_path: Path) -> None:
    runs = [er.Run(tiny, tmp_path / str(i), seed=s, checkpoint=False) for i, s in enumerate([1, 1, 2])]
    losses = [r.step_epoch()["train_loss"] for r in runs]
    assert losses[0] == losses[1] != losses[2]
    assert not (tmp_path / "0" / "checkpoints").exists()


def test_a_resumed_run_takes_a_controller(tiny: dict, tmp_path: Path) -> None:
    with er.Run(tiny, tmp_path) as run:
        assert run.controller == "heuristic"
        run.step_epoch()
    seen: list[int] = []
    with er.Run.resume(tmp_path, controller=lambda o: seen.append(o["epoch"])) as resumed:
        assert resumed.controller == "python"
        resumed.step_epoch()
    assert seen == [2]
    with er.Run.resume(tmp_path, controller="external") as resumed:
        assert resumed.controller == "external"


def test_an_interrupt_in_the_callable_is_raised_by_step_epoch_once_the_epoch_is_over(
    tiny: dict, tmp_path: Path
) -> None:
    def policy(observation: dict) -> None:
        if observation["epoch"] == 1:
            raise KeyboardInterrupt

    run = er.Run(tiny, tmp_path, controller=policy)
    with pytest.raises(KeyboardInterrupt):
        run.step_epoch()
    assert run.next_epoch == 2, "epoch 1 is recorded"
    (failed,) = [e for e in run.events() if e["event"] == "controller_failed"]
    assert failed["reason"].startswith("KeyboardInterrupt"), failed
    assert run.step_epoch()["epoch"] == 2, "raised once; the run goes on"


def test_the_callable_cannot_reenter_its_run(tiny: dict, tmp_path: Path) -> None:
    runs: list[er.Run] = []
    run = er.Run(tiny, tmp_path, controller=lambda o: runs[0].observe())
    runs.append(run)
    record = run.step_epoch()
    failed = [e for e in record["events"] if e["event"] == "controller_failed"]
    assert failed and "borrow" in failed[0]["reason"], record["events"]
