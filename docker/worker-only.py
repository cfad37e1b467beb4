"""Remove what a worker never runs from an installed digitscan: the exporter, and the
trainer but for its torch-free recipe defaults (the CLI's help shows them).

The worker image runs this after `pip install '.[worker]'`: one distribution, one wheel,
and a worker image without training or export code. Its `digitscan train` and `export`
then say in one line which install they need.

    python docker/worker-only.py [PYTHON]   # default: this interpreter's digitscan
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

KEEP_IN_TRAINER = ("__init__.py", "config.py")


def package_dir(python: str) -> Path:
    # -P: the image runs this in /app, beside the copied sources, whose digitscan/ folder
    # would otherwise stand in for the installed package (python -c puts the working
    # directory first on sys.path).
    code = "import digitscan, os; print(os.path.dirname(digitscan.__file__))"
    out = subprocess.run([python, "-P", "-c", code], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def strip(root: Path) -> list[str]:
    removed = []
    if (root / "export").is_dir():
        shutil.rmtree(root / "export")
        removed.append("export/")
    for path in sorted((root / "trainer").iterdir()):
        if path.name not in KEEP_IN_TRAINER:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed.append(f"trainer/{path.name}")
    return removed


if __name__ == "__main__":
    root = package_dir(sys.argv[1] if len(sys.argv) > 1 else sys.executable)
    if (root.parent / "pyproject.toml").exists() or root.is_symlink():
        sys.exit(f"{root} looks like a source checkout, not an installed package; not touching it")
    print(f"removed from {root}: {', '.join(strip(root)) or 'nothing'}")
