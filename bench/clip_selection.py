"""Benchmark: clip selection at NTU RGB+D 120 scale (issue 15).

Builds once, cached under `$TMPDIR/dreamrelation-bench-select` (`--cache DIR` to move it), a
tree shaped like NTU-120: 114,480 correctly named samples `SsssCcccPpppRrrrAaaa` (954 per
action; A001-A060 in setups S001-S017, A061-A120 in S018-S032), each a `<name>_rgb.avi` in
`nturgb+d_rgb/` and a `<name>.skeleton` in `nturgb+d_skeletons/` (228,960 files). The target
relation's 954 samples (A058, handshaking) have realistic two-body skeletons (103 frames,
~590 KB, CRLF line ends like NTU's files) and a small valid 1920x1080 video (MPEG-4 in AVI,
103 frames at 30 fps); 3% of them have one tracked body and 1% no skeleton file, as in NTU.
Every other file is empty. Building takes a few minutes, once.

Measured in one run (each "cold" row starts with an empty artifact store and no listing in
memory, so it lists the 228,960 files and opens every clip it checks; the OS page cache is
warm), printed as a table:
- select k=20 lazily, cold; again with another seed (listing and check caches warm);
- select in check_all mode, cold and warm;
- listing the tree alone;
- skeleton parse ms per file (CPU time, and wall), the fast reader vs the reference, and their ratio.
The last line is `select k=20 at NTU-120 scale: S s` (the cold lazy selection).
Targets (issue 15, 2 cores): lazy <= 5 s, check_all <= 15 s, parse <= 5 ms per ~600 KB file.

    python bench/clip_selection.py [--cache DIR] [--relation A058] [--k 20]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from dreamrelation.data.listing import forget_listings, list_dataset
from dreamrelation.data.ntu import ClipName
from dreamrelation.data.relations import get_relation
from dreamrelation.data.select import SelectConfig, select_clips
from dreamrelation.data.skeleton import parse_skeleton, parse_skeleton_bytes
from dreamrelation.data.store import ArtifactStore
from dreamrelation.data.video import VideoConfig

TREE_VERSION = "1"
SAMPLES_PER_ACTION = 954  # 114,480 / 120
FRAMES = 103
WIDTH, HEIGHT = 1920, 1080


def samples(action: int) -> list[ClipName]:
    """954 distinct sample names of one action, in NTU's setup ranges."""
    setups = range(1, 18) if action <= 60 else range(18, 33)
    names = (
        ClipName(setup, camera, performer, replication, action)
        for performer in range(1, 41)
        for setup in setups
        for camera in (1, 2, 3)
        for replication in (1, 2)
    )
    return [name for _, name in zip(range(SAMPLES_PER_ACTION), names)]


def skeleton_text(rng: np.random.Generator, bodies: int) -> bytes:
    """A 103-frame Kinect-v2-like skeleton: two people a few metres apart, moving a little."""
    out = [str(FRAMES)]
    base = rng.normal(0, 0.25, (bodies, 25, 3)) + np.array([[-0.5, 0, 3.5], [0.5, 0, 3.6]])[:bodies, None]
    for t in range(FRAMES):
        out.append(str(bodies))
        for k in range(bodies):
            xyz = base[k] + 0.05 * np.sin(t / 9 + np.arange(25))[:, None] + rng.normal(0, 0.003, (25, 3))
            depth = np.stack([256 + 365 * xyz[:, 0] / xyz[:, 2], 212 - 365 * xyz[:, 1] / xyz[:, 2]], axis=1)
            color = np.stack([960 + 1060 * xyz[:, 0] / xyz[:, 2], 540 - 1060 * xyz[:, 1] / xyz[:, 2]], axis=1)
            orient = rng.normal(0, 0.5, (25, 4))
            state = rng.choice([1, 2], 25, p=[0.1, 0.9])
            out.append(f"{72057594037927936 + 1000 * k + 17} 0 1 1 1 1 0 {rng.normal(0, 0.1):.7g} "
                       f"{rng.normal(0, 0.1):.7g} 2")
            out.append("25")
            rows = np.concatenate([xyz, depth, color, orient], axis=1).tolist()
            out.extend(
                "%.7g %.7g %.7g %.7g %.7g %.7g %.7g %.7g %.7g %.7g %.7g %d" % (*row, s)
                for row, s in zip(rows, state.tolist())
            )
    return ("\r\n".join(out) + "\r\n").encode()


def small_video(path: Path) -> None:
    """103 frames of 1920x1080 at 30 fps, MPEG-4 in AVI; one keyframe keeps it small."""
    image = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
    image[300:800, 600:1300] = 180
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.gop_size = 300
        for _ in range(FRAMES):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def build_tree(cache: Path, relation: str) -> Path:
    """The NTU-120-sized tree (built once; a stamp file marks it complete)."""
    root = cache / f"ntu120-{relation}"
    stamp = root / ".bench-tree"
    if stamp.exists() and stamp.read_text() == TREE_VERSION:
        return root
    if root.exists():
        shutil.rmtree(root)
    rgb, skeletons = root / "nturgb+d_rgb", root / "nturgb+d_skeletons"
    rgb.mkdir(parents=True)
    skeletons.mkdir()
    started = time.perf_counter()
    target = int(relation[1:])
    video = cache / "video.avi"
    small_video(video)
    rng = np.random.default_rng(15)
    for action in range(1, 121):
        for index, name in enumerate(samples(action)):
            if action != target:
                (rgb / f"{name}_rgb.avi").touch()
                (skeletons / f"{name}.skeleton").touch()
                continue
            shutil.copyfile(video, rgb / f"{name}_rgb.avi")
            if index % 100 == 50:
                continue  # 1%: NTU lists samples with missing skeletons
            bodies = 1 if index % 33 == 7 else 2  # 3%: one tracked body
            (skeletons / f"{name}.skeleton").write_bytes(skeleton_text(rng, bodies))
    stamp.write_text(TREE_VERSION)
    print(f"built {root} in {time.perf_counter() - started:.0f} s")
    return root


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def parse_times(files: list[Path], repeats: int = 5) -> dict[str, float]:
    """Median over files of the best of `repeats` parses, in ms: wall and CPU time, fast reader and reference.

    CPU time (`time.process_time`) is what one core spends; wall time also counts waiting for a
    core, which a busy machine adds.
    """
    times: dict[str, list[float]] = {"fast wall": [], "fast cpu": [], "reference wall": [], "reference cpu": []}
    for path in files:
        data = path.read_bytes()
        readers = {
            "fast": lambda: parse_skeleton_bytes(data, str(path)),
            "reference": lambda: parse_skeleton(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"), str(path)),
        }
        for reader, parse in readers.items():
            wall = cpu = float("inf")
            for _ in range(repeats):
                started, started_cpu = time.perf_counter(), time.process_time()
                parse()
                wall = min(wall, time.perf_counter() - started)
                cpu = min(cpu, time.process_time() - started_cpu)
            times[f"{reader} wall"].append(wall)
            times[f"{reader} cpu"].append(cpu)
    return {key: 1000 * statistics.median(values) for key, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dreamrelation-bench-select")
    parser.add_argument("--relation", default="A058")
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()
    root = build_tree(args.cache, args.relation)
    relation = get_relation(args.relation)
    video = VideoConfig()
    stores = args.cache / "stores"
    shutil.rmtree(stores, ignore_errors=True)

    def select(store_name: str, cold: bool, **config):
        if cold:
            forget_listings()
        store = ArtifactStore(stores / store_name)
        cfg = SelectConfig(dataset_root=str(root), clips_per_relation=args.k, **config)
        return timed(lambda: select_clips(relation, cfg, video, store=store))

    rows = []
    lazy_s, lazy = select("lazy", cold=True, seed=0)
    rows.append(("select k=%d lazily, cold" % args.k, f"{lazy_s:.2f} s",
                 f"{len(lazy.checked)} of {lazy.candidates} clips checked, {lazy.unchecked} not"))
    again_s, again = select("lazy", cold=False, seed=1)
    rows.append(("select k=%d lazily, another seed, warm caches" % args.k, f"{again_s:.2f} s",
                 f"{len(again.checked)} checked"))
    full_s, full = select("check_all", cold=True, seed=0, check_all=True)
    rows.append(("select check_all, cold", f"{full_s:.2f} s",
                 f"{len(full.checked)} clips checked, {full.available} usable, {len(full.dropped)} dropped"))
    warm_s, _ = select("check_all", cold=False, seed=2, check_all=True)
    rows.append(("select check_all, warm caches", f"{warm_s:.2f} s", "measurements from the check cache"))
    assert full.clip_ids == lazy.clip_ids, "lazy and check_all must choose the same clips"
    forget_listings()
    list_s, listing = timed(lambda: list_dataset(str(root), refresh=True))
    rows.append(("list the tree (no cache)", f"{list_s:.2f} s", f"{listing.files:,} NTU files"))
    skeleton_files = sorted((root / "nturgb+d_skeletons").glob(f"*{args.relation}.skeleton"))[:40]
    ms = parse_times(skeleton_files)
    size_kb = statistics.median(p.stat().st_size for p in skeleton_files) / 1000
    for reader in ("fast", "reference"):
        rows.append((f"skeleton parse, {reader} reader ({size_kb:.0f} KB file)", f"{ms[reader + ' cpu']:.2f} ms",
                     f"CPU time; wall {ms[reader + ' wall']:.2f} ms; median of {len(skeleton_files)} files"))
    rows.append(("skeleton parse ratio, reference / fast", f"{ms['reference cpu'] / ms['fast cpu']:.1f}x",
                 f"wall {ms['reference wall'] / ms['fast wall']:.1f}x"))

    print(f"\nNTU-120-sized tree: {root}")
    print("| measurement | time | note |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"select k={args.k} at NTU-120 scale: {lazy_s:.2f} s")


if __name__ == "__main__":
    main()
