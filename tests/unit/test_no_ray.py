"""The science and the results contract run without Ray, and the packages import in one
direction: drivers and CLI -> farm -> science + results <- analysis."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_science_and_results_imports_leave_ray_out():
    code = (
        "import sys\n"
        "import pp_cluster.data, pp_cluster.nets, pp_cluster.privacy, pp_cluster.pipeline, pp_cluster.config\n"
        "import pp_cluster.privacy.attack, pp_cluster.privacy.defense, pp_cluster.privacy.metrics\n"
        "import pp_cluster.privacy.recipes, pp_cluster.precision, pp_cluster.profiles\n"
        "import pp_cluster.results.store, pp_cluster.results.rows, pp_cluster.results.rules, pp_cluster.results.fs\n"
        "import analysis.tables, analysis.report\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _imports(folder: Path) -> dict[str, set[str]]:
    """Every module each file of ``folder`` imports (top level or inside functions)."""
    out = {}
    for f in folder.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        out[str(f.relative_to(REPO))] = names
    return out


def test_imports_go_one_way():
    def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
        return sorted(
            f"{f}: {m}"
            for f, mods in _imports(REPO / folder).items()
            for m in mods
            if any(m == x or m.startswith(x + ".") for x in forbidden)
        )

    assert offenders("analysis", ("pp_cluster.farm", "ray")) == []
    assert offenders("pp_cluster/farm", ("analysis",)) == []
    science = ("pp_cluster/data", "pp_cluster/nets", "pp_cluster/privacy", "pp_cluster/results")
    for folder in science:
        assert offenders(folder, ("pp_cluster.farm", "analysis", "ray")) == [], folder
    for module in ("pp_cluster/config.py", "pp_cluster/pipeline.py"):
        mods = _imports(REPO / module.rsplit("/", 1)[0])[module]
        assert not [m for m in mods if m.startswith(("pp_cluster.farm", "ray", "analysis"))], module
