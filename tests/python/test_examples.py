"""The Python examples run at their smoke size and print what they say they print (no
claim about learning: that needs far more episodes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO, target_dir

EXAMPLES = REPO / "examples" / "python"


def run_example(name: str, *args: str) -> str:
    env = dict(os.environ, ESPER_TARGET_DIR=str(target_dir()))
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_random_vs_heuristic_prints_both_mean_returns() -> None:
    lines = run_example("random_vs_heuristic.py", "--smoke").splitlines()
    number = r"-?\d+\.\d{3}"
    assert len(lines) == 2, lines
    assert re.match(rf"random legal policy: mean return {number} over 1 episode\(s\)", lines[0]), lines
    assert re.match(rf"heuristic: mean return {number} over 1 episode\(s\) \([1-9]\d* seed", lines[1]), lines


def test_ppo_logs_each_update() -> None:
    lines = run_example("ppo.py", "--smoke").splitlines()
    assert lines[0].startswith("ppo: 2 environments, 2 updates of 3 steps"), lines
    updates = [line for line in lines if line.startswith("update ")]
    assert [u.split(":")[0] for u in updates] == ["update 1/2", "update 2/2"], lines
    for u in updates:
        assert re.search(r"mean return -?\d+\.\d+, policy loss .*value loss .*entropy \d", u), u
