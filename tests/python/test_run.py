"""A run driven from Python: configs from a file or a dict, their errors, stepping an
epoch at a time, the report and events, checkpoints and resume."""

from __future__ import annotations

import threading
import time
import tomllib
from pathlib import Path

import pytest
from conftest import small_job, without_timings

import esper_runtime as er
from esper_runtime import _toml

TOML = """device = "cpu"
slots = ["r0c1"]

[[plugins]]
path = "{plugin}"

[host]
base_channels = 8
memory_format = "channels_last"

[data]
kind = "synthetic"
train_size = 256
val_size = 128

[training]
epochs = 3
batch_size = 64
gradient_every = 2

[slot]
blend_tempo = 2

[lifecycle.gates]
mode = "permissive"
min_blending_epochs = 1
min_gradient_health_for_blending = 0.0

[lifecycle.controller]
enabled = false

[[lifecycle.schedule]]
epoch = 1
slot = "r0c1"
blueprint = "norm"

[output]
dir = "out"
"""


def test_a_run_from_a_file_and_from_the_same_dict_agree(norm_plugin: Path, tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(TOML.format(plugin=norm_plugin))
    from_file = er.Run(path)
    assert from_file.run_dir == tmp_path / "out", "[output] dir is relative to the config file"
    from_dict = er.Run(small_job(norm_plugin, tmp_path / "dict"))
    assert tomllib.loads(TOML.format(plugin=norm_plugin))["lifecycle"] == small_job(norm_plugin, tmp_path)["lifecycle"]
    assert without_timings(from_file.step_epoch()) == without_timings(from_dict.step_epoch())


def test_run_dir_and_epochs_override_the_config(job: dict, tmp_path: Path) -> None:
    run = er.Run(job, tmp_path / "elsewhere", epochs=1)
    assert (run.run_dir, run.epochs, run.next_epoch, run.slots) == (tmp_path / "elsewhere", 1, 1, ["r0c1"])
    assert run.step_epoch()["epoch"] == 1
    assert run.step_epoch() is None
    assert (tmp_path / "elsewhere" / "checkpoints").is_dir()
    assert not (tmp_path / "out").exists()


def test_a_bad_config_file_raises_with_the_file_line_and_cause(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[training]\nepochs = 2\nlearning_rate = 0.1\n")
    with pytest.raises(er.ConfigError) as e:
        er.Run(path)
    text = str(e.value)
    assert f"config {path}" in text and "line 3, column 1" in text and "unknown field `learning_rate`" in text, text
    with pytest.raises(er.ConfigError, match="cannot read config .*missing.toml: No such file"):
        er.Run(tmp_path / "missing.toml")


def test_a_bad_config_dict_raises_naming_the_key(job: dict) -> None:
    job["training"]["learning_rate"] = 0.1
    with pytest.raises(er.ConfigError) as e:
        er.Run(job)
    assert "config <dict>" in str(e.value) and "unknown field `learning_rate`" in str(e.value), str(e.value)
    job["training"]["learning_rate"] = None
    with pytest.raises(TypeError, match=r"training\.learning_rate: NoneType None has no TOML form"):
        er.Run(job)


def test_a_checked_config_error_and_a_plugin_error_have_their_classes(job: dict, tmp_path: Path) -> None:
    job["training"]["batch_size"] = 0
    with pytest.raises(er.ConfigError, match="batch_size"):
        er.Run(job)
    job["training"]["batch_size"] = 64
    fake = tmp_path / "libfake.so"
    fake.write_text("not a library")
    job["plugins"] = [{"path": str(fake)}]
    with pytest.raises(er.PluginError) as e:
        er.Run(job)
    assert str(fake) in str(e.value), str(e.value)


def test_step_epoch_runs_each_epoch_then_says_the_run_is_over(job: dict) -> None:
    run = er.Run(job)
    records = [run.step_epoch() for _ in range(3)]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert run.step_epoch() is None and run.step_epoch() is None
    assert run.next_epoch == 4
    first = records[0]
    assert 0.0 <= first["val_accuracy"] <= 100.0 and first["train_loss"] > 0 and first["steps"] == 4
    assert [s["slot"] for s in first["slots"]] == ["r0c1"]
    report = run.report()
    assert report["format"] == 2 and report["epochs"] == records
    assert [s["slot"] for s in report["final_slots"]] == ["r0c1"]
    final = report["final_slots"][0]
    assert final["state"]["blueprint_id"] == "cnn:norm" and final["seed_parameters"] > 0, final


def test_events_are_tagged_dicts_with_their_epoch(job: dict) -> None:
    run = er.Run(job)
    assert run.events() == []
    run.step_epoch()
    run.step_epoch()
    events = run.events()
    germinated = [e for e in events if e["event"] == "germinated"]
    assert len(germinated) == 1 and germinated[0]["slot"] == "r0c1" and germinated[0]["blueprint"] == "cnn:norm"
    assert germinated[0]["epoch"] == 1
    assert {e["epoch"] for e in events} <= {1, 2} and all("text" in e for e in events)
    assert events == [dict(e, epoch=r["epoch"]) for r in run.report()["epochs"] for e in r["events"]]


def test_a_run_folder_that_holds_a_run_is_refused(job: dict) -> None:
    with er.Run(job) as run:
        run.step_epoch()
    with pytest.raises(er.RunError, match=r"is not empty.*Run\.resume"):
        er.Run(job)


def test_a_closed_run_refuses_calls_and_frees_its_folder(job: dict) -> None:
    run = er.Run(job)
    run.step_epoch()
    with pytest.raises(er.RunError, match="lock"):
        er.Run.resume(job["output"]["dir"])
    run.close()
    with pytest.raises(er.RunError, match="closed"):
        run.step_epoch()
    er.Run.resume(job["output"]["dir"]).close()


def test_the_gil_is_released_while_an_epoch_runs(job: dict) -> None:
    run = er.Run(job)
    ticks, stop = [0], threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0.001)

    thread = threading.Thread(target=tick)
    thread.start()
    try:
        time.sleep(0.05)
        before = ticks[0]
        started = time.monotonic()
        run.step_epoch()
        elapsed, during = time.monotonic() - started, ticks[0] - before
    finally:
        stop.set()
        thread.join()
    # Holding the GIL, the epoch would leave the other thread a tick or two.
    assert during >= 10, (during, elapsed)


def test_the_toml_writer_round_trips_a_config() -> None:
    config = {
        "a": 1,
        "b": [1.5, float("inf")],
        "s": 'quote " and \\ and é\n',
        "t": {"x": True, "inline": [{"k": 1}], "u": {"v": -2}},
        "arr": [{"p": "q"}, {"p": "r", "sub": {"z": 0.1}}],
        "odd key": 3,
    }
    assert tomllib.loads(_toml.dumps(config)) == config
    with pytest.raises(TypeError, match=r"t\.x"):
        _toml.dumps({"t": {"x": object()}})
