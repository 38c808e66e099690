"""The package imports beside torch in either order, sharing one libtorch."""

import subprocess
import sys

import pytest

SHARED = """
import {first}, {second}
import esper_runtime, torch
torch.zeros(2).add_(1)
libs = set()
for line in open("/proc/self/maps"):
    path = line.split()[-1]
    if path.endswith("/libtorch_cpu.so"):
        libs.add(path)
assert len(libs) == 1, libs
print(sorted(libs)[0])
"""


@pytest.mark.parametrize("first,second", [("torch", "esper_runtime"), ("esper_runtime", "torch")])
def test_imports_in_either_order_with_one_libtorch(first: str, second: str) -> None:
    code = SHARED.format(first=first, second=second)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    import torch

    assert out.stdout.strip().startswith(torch.__path__[0]), (out.stdout, torch.__path__)


def test_the_errors_form_one_hierarchy() -> None:
    import esper_runtime as er

    for e in (er.ConfigError, er.PluginError, er.RunError, er.CheckpointError):
        assert issubclass(e, er.EsperError) and e.__module__ == "esper_runtime"
    assert issubclass(er.CheckpointError, er.RunError)
    assert not issubclass(er.ConfigError, er.RunError)
