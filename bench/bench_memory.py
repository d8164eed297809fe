"""Peak memory of a whole run at two collection sizes: it should not grow with the collection.

Runs the command line (``main.py --dataset ... --embedders heavy --no-analysis``) in a fresh
process per size, with a synthetic embedder as heavy as default OpenL3 on output (6144-d frames,
10 per second, see ``heavy_embedder.py``) over one-minute WAV files (100 Hz, so tiny on disk;
the frame count follows the stated duration), twice: a first run that computes everything and
a second one that finds everything in the cache. Prints the peak RSS of each side by side,
the large/small ratios (goal: <= 1.2), and checks that the exported frames equal what the
embedder computes.

Disk: each one-minute file gives 14.7 MB of frames, stored twice (cache + export): 160 files
need ~4.8 GB under ``--work`` (each size's folder is removed after it is measured).

Usage: ``python bench/bench_memory.py [--sizes 40 160] [--work DIR] [--repo PATH]``
(``--repo`` measures another checkout of this project with the same embedder, e.g. an older one).
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from heavy_embedder import DIM, FRAMES_PER_SECOND, heavy_frames  # noqa: E402

# The run reports its own peak from /proc (VmHWM, Linux): the child's rusage would also count
# the memory of this benchmark process it was forked from, before exec.
LAUNCHER = """
import sys
sys.path[:0] = [{repo!r}, {bench!r}]
import heavy_embedder  # registers "heavy" before the command line looks it up
from cli import main
try:
    code = main(sys.argv[1:])
finally:
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM:"))
    with open({report!r}, "w") as out:
        out.write(str(int(hwm.split()[1]) * 1024))
sys.exit(code)
"""


def make_collection(folder: Path, n_files: int, *, seconds: float = 60.0, sr: int = 100) -> None:
    """``n_files`` distinct one-minute WAV files in 4 class folders."""
    rng = np.random.default_rng(n_files)
    for i in range(n_files):
        path = folder / f"genre{i % 4}" / f"piece{i:04d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), 0.1 * rng.standard_normal(int(seconds * sr)), sr, subtype="PCM_16")


def run_cli(repo: Path, work: Path, data: Path) -> tuple[int, float, int]:
    """Run the command line once; (peak RSS in bytes, seconds, exit status)."""
    launcher, report = work / "launch.py", work / "peak_rss"
    launcher.write_text(LAUNCHER.format(repo=str(repo), bench=str(HERE), report=str(report)))
    argv = [sys.executable, str(launcher), "--dataset", str(data), "--embedders", "heavy",
            "--emb-dir", str(work / "emb"), "--out", str(work / "out"), "--no-analysis",
            "--quiet"]
    t0 = time.perf_counter()
    code = subprocess.run(argv, stdout=subprocess.DEVNULL).returncode
    return int(report.read_text()), time.perf_counter() - t0, code


def check_export(emb_dir: Path, n_files: int, n_check: int = 3) -> str:
    """Recompute a few items and compare them with the exported frames."""
    sys.path.insert(0, str(ROOT))
    from collection.export import export_dir, read_export

    folder = export_dir(emb_dir, "heavy")
    if not folder.exists():
        return "no export folder (an older layout?): frames not checked"
    exp = read_export(folder)  # frames memory-mapped
    assert len(exp) == n_files, (len(exp), n_files)
    assert exp.frames.shape == (n_files * 60 * FRAMES_PER_SECOND, DIM), exp.frames.shape
    for i in np.linspace(0, n_files - 1, n_check).astype(int):
        frames, timestamps = heavy_frames(str(exp.paths[i]))
        np.testing.assert_array_equal(exp.item_frames(i), frames)
        np.testing.assert_array_equal(exp.timestamps[exp.frame_offsets[i]:exp.frame_offsets[i + 1]],
                                      timestamps)
        np.testing.assert_allclose(exp.clip[i], frames.mean(0), rtol=1e-6)
    return f"exported frames of {n_check} items equal a recomputation"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[40, 160], metavar=("SMALL", "LARGE"),
                    help="numbers of one-minute files (default 40 160)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--repo", default=str(ROOT), help="checkout whose command line is measured")
    args = ap.parse_args()
    scratch = Path(args.work or tempfile.mkdtemp(prefix="bench_memory_"))
    scratch.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for n_files in args.sizes:
            work = scratch / f"n{n_files}"
            shutil.rmtree(work, ignore_errors=True)
            make_collection(work / "data", n_files)
            gb = n_files * 60 * FRAMES_PER_SECOND * DIM * 4 / 1e9
            peaks = []
            for label in ("first run", "cached run"):
                peak, seconds, code = run_cli(Path(args.repo).resolve(), work, work / "data")
                if code != 0:
                    sys.exit(f"the {label} over {n_files} files failed with status {code}")
                checked = check_export(work / "emb", n_files)
                peaks.append(peak)
                print(f"{n_files:4d} files ({gb:.2f} GB of frames), {label:10s}: peak RSS "
                      f"{peak / 1e6:7.0f} MB in {seconds:5.1f} s; {checked}", flush=True)
            results.append((n_files, peaks))
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if args.work is None:
            shutil.rmtree(scratch, ignore_errors=True)
    (small, peaks_small), (large, peaks_large) = results
    for k, label in enumerate(("first run", "cached run")):
        print(f"{label:10s} peak RSS {small} vs {large} files: {peaks_small[k] / 1e6:.0f} MB vs "
              f"{peaks_large[k] / 1e6:.0f} MB, ratio {peaks_large[k] / peaks_small[k]:.2f} "
              f"(goal <= 1.2)")


if __name__ == "__main__":
    main()
