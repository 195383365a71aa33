"""No hang can eat the CI limit: pytest-timeout is on with the suite's own settings, a test marked slow gets the
larger limit (tests/conftest.py), and a hung test fails with its name and a stack instead of waiting forever."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_has_a_limit_and_slow_ones_a_larger_one(request):
    fast = float(request.config.getini("timeout"))
    assert fast > 0
    assert request.node.get_closest_marker("timeout") is None  # a fast test keeps the default
    for item in request.session.items:
        if item.get_closest_marker("slow"):
            mark = item.get_closest_marker("timeout")
            limit = mark.args[0] if mark.args else mark.kwargs["timeout"]
            assert limit > fast, item.nodeid


def test_a_hung_test_fails_by_timeout_with_its_name_and_a_stack(tmp_path):
    (tmp_path / "test_hang.py").write_text(
        "import threading\n\n\ndef test_waits_forever():\n    threading.Event().wait()\n")
    # The suite's own configuration (pyproject.toml), with the limit shortened to keep this test short.
    proc = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir",
                           str(tmp_path), "-o", "timeout=3", "-p", "no:cacheprovider", str(tmp_path / "test_hang.py")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "FAILED test_hang.py::test_waits_forever - Failed: Timeout (>3.0s)" in out, out
    assert ">       threading.Event().wait()" in out, out  # the stack says where it hung
    assert "1 failed" in out, out
