"""The package's imports: no circle anywhere, and grading an .onnx file loads no torch."""

import subprocess
import sys

import grimp


def _cycles(adjacency: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), i.e. the import circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in adjacency[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in adjacency:
        if module not in index:
            visit(module)
    return found


def test_cycles_finds_a_circle():
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert _cycles({"a": ["b"], "b": []}) == []


def test_no_module_imports_itself_back_through_others():
    """Function-level imports count too; type-only imports (TYPE_CHECKING) do not."""
    graph = grimp.build_graph("imgrade", exclude_type_checking_imports=True)
    adjacency = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    assert _cycles(adjacency) == []


def test_the_onnx_grading_path_imports_no_torch():
    code = (
        "import sys\n"
        "import imgrade.runtime.api, imgrade.runtime.onnx_engine, imgrade.pipeline.predictor, imgrade.pipeline.suggester\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
