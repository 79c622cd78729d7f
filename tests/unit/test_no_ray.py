"""The science packages must run without Ray: importing them never imports it."""

import subprocess
import sys


def test_science_imports_leave_ray_out():
    code = (
        "import sys\n"
        "import pp_cluster.data, pp_cluster.nets, pp_cluster.privacy\n"
        "import pp_cluster.privacy.attack, pp_cluster.privacy.defense, pp_cluster.privacy.metrics\n"
        "import pp_cluster.privacy.recipes\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
