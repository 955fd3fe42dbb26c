"""Peak memory of loading a MOSEI-sized feature file, as a multiple of its array bytes.

Builds a file shaped like MOSEI's unaligned_50.pkl (16326/1871/4659 samples, audio 500x74, vision 500x35,
text_bert 3x50, text 50x768), then loads it with `robustmm.data.load` in a fresh process and prints that
process's peak RSS over the file's array bytes. `--scale 0.25` builds a quarter-sized file.

    python benchmarks/load_memory.py [--scale 1.0] [--keep PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MOSEI_SIZES = (16326, 1871, 4659)
# The child reads its high-water mark from /proc (ru_maxrss would carry over the parent's from before exec).
CHILD = """
import json, re, sys, time
from robustmm import data

def high_water_mark():
    status = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024

baseline = high_water_mark()
start = time.perf_counter()
loaded = data.load(sys.argv[1])
seconds = time.perf_counter() - start
peak = high_water_mark()
print(json.dumps({"peak_rss": peak, "baseline_rss": baseline, "array_bytes": data.array_bytes(loaded), "seconds": seconds}))
"""


def build_split(rng: np.random.Generator, n: int) -> dict:
    lengths = rng.integers(1, 51, size=n)
    mask = (np.arange(50)[None] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1000, 30000, size=(n, 50)) * mask
    return {
        "id": np.array([f"video{row // 10}$_${row % 10}" for row in range(n)], dtype=object),
        "raw_text": np.array(["a transcript"] * n, dtype=object),
        "text_bert": np.stack([ids, mask, np.zeros_like(mask)], axis=1),
        "text": np.ones((n, 50, 768), dtype=np.float32),
        "audio": np.ones((n, 500, 74), dtype=np.float32),
        "vision": np.ones((n, 500, 35), dtype=np.float32),
        "audio_lengths": rng.integers(1, 501, size=n),
        "vision_lengths": rng.integers(1, 501, size=n),
        "regression_labels": rng.uniform(-3, 3, size=n).astype(np.float32),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of MOSEI's sample counts")
    parser.add_argument("--keep", type=Path, help="write the file here and keep it (default: a temporary file)")
    args = parser.parse_args()

    from robustmm import data

    sizes = [max(1, int(n * args.scale)) for n in MOSEI_SIZES]
    with tempfile.TemporaryDirectory() as scratch:
        path = args.keep or Path(scratch) / "mosei_shaped.pkl"
        start = time.perf_counter()
        rng = np.random.default_rng(0)
        data.write({name: build_split(rng, n) for name, n in zip(data.SPLITS, sizes)}, path)
        print(
            f"built {path} ({path.stat().st_size / 2**30:.2f} GiB, splits {sizes}) in {time.perf_counter() - start:.0f} s"
        )
        result = json.loads(
            subprocess.run([sys.executable, "-c", CHILD, str(path)], check=True, capture_output=True, text=True).stdout
        )
    gib = 2**30
    print(f"load time          {result['seconds']:.1f} s")
    print(f"array bytes        {result['array_bytes'] / gib:.2f} GiB")
    print(
        f"peak RSS           {result['peak_rss'] / gib:.2f} GiB (interpreter and imports before loading: {result['baseline_rss'] / gib:.2f} GiB)"
    )
    print(f"peak RSS / arrays  {result['peak_rss'] / result['array_bytes']:.3f} (target <= 1.5)")


if __name__ == "__main__":
    main()
