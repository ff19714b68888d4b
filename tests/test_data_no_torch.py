"""edgefuse.data must work on a kiosk without torch: run it with torch made unimportable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import sys, tempfile
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from edgefuse.data import museum, dataset, preprocess, tokenizer, commands
items = museum.generate("val", 3)
out = tempfile.mkdtemp() + "/ds"
dataset.write_dataset(items, out)
back = dataset.read_dataset(out)
feed = preprocess.Preprocessor()([b.image for b in back], [b.questions[0].question for b in back])
assert feed["pixel_values"].shape == (3, 3, 64, 64)
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
print("ok")
"""


def test_data_room_runs_without_torch():
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
