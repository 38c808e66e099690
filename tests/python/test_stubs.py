"""The type stubs describe the module as it is: the same names, the same methods."""

import ast
from pathlib import Path

import esper_runtime
from esper_runtime import _native

STUB = Path(esper_runtime.__file__).with_name("_native.pyi")


def stub_names() -> tuple[set[str], dict[str, set[str]]]:
    tree = ast.parse(STUB.read_text())
    top, members = set(), {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            top.add(node.name)
            members[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        elif isinstance(node, ast.FunctionDef):
            top.add(node.name)
    return top, members


def test_the_stubs_name_what_the_module_has() -> None:
    top, members = stub_names()
    public = {n for n in dir(_native) if not n.startswith("_")}
    assert top == public
    run = {n for n in dir(_native.Run) if not n.startswith("_") or n in ("__enter__", "__exit__", "__new__")}
    assert members["Run"] == run
    assert set(esper_runtime.__all__) == public


def test_the_package_is_typed() -> None:
    assert Path(esper_runtime.__file__).with_name("py.typed").is_file()
