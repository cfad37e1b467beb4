"""The README's no-PyTorch consumer snippet, run exactly as printed."""

import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
# Runs the snippet with torch made unimportable, so it cannot lean on it by accident.
NO_TORCH = ("import runpy, sys; sys.modules['torch'] = None; "
            "runpy.run_path(sys.argv.pop(1), run_name='__main__')")


def snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- consumer-snippet -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README lost its consumer snippet"
    return match.group(1)


def test_snippet_is_about_a_dozen_lines():
    lines = [line for line in snippet().splitlines() if line.strip()]
    assert len(lines) <= 14


def test_snippet_reads_a_digit_without_torch(tmp_path, mnist):
    code = tmp_path / "consumer.py"
    code.write_text(snippet())
    for i in range(5):
        Image.fromarray(255 - mnist.test_images[i]).save(tmp_path / f"{i}.png")
        out = subprocess.run([sys.executable, "-c", NO_TORCH, str(code), str(tmp_path / f"{i}.png")],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert out.returncode == 0, out.stderr
        digit, prob = out.stdout.split()
        assert int(digit) == mnist.test_labels[i]
        assert prob.startswith("(") and prob.endswith("%)")
