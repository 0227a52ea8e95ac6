"""Benchmark of the out-of-core reduction: peak memory and throughput against raw reads.

Writes synthetic extraction stores (``--tokens`` tokens × ``--steps`` steps, every per-token
measurement, float32) into ``--dir``, then, each in a fresh subprocess so that peak RSS is its
own:

* ``read``: every array of every store read chunk by chunk with zarr (the raw read speed);
* ``reduce``: ``pipeline.reduce.reduce_model`` over the same stores;

and prints the stores' total size, each phase's peak RSS and throughput (MB/s of store data)
and the ratio reduce/read (goal ≥ 0.5). Example (see docs/performance.md)::

    .venv/bin/python benchmarks/reduce.py --tokens 2097152 --steps 24 --dir /tmp/reduce-bench
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def write(args) -> None:
    import numpy as np
    import xarray as xr

    from pipeline.schema import MEASUREMENTS
    from pipeline.store import write_zarr

    rng = np.random.default_rng(0)
    bins = np.maximum(-20, -4 - rng.geometric(0.35, args.tokens)).astype(np.int64)  # ~12 bins
    out = Path(args.dir)
    for s in range(args.steps):
        path = out / f"step{s}.zarr"
        if path.exists():
            continue
        data = {m: ("token", rng.random(args.tokens, dtype=np.float32)) for m in MEASUREMENTS}
        ds = xr.Dataset(
            data,
            coords={"token": np.arange(args.tokens), "bin": ("token", bins)},
            attrs={"weights_sha256": f"synthetic{s}"},
        ).expand_dims(step=np.array([s], dtype=np.int64))
        write_zarr(ds.chunk({"token": args.chunk}), path)
        print(f"wrote {path}", flush=True)


def read(args) -> dict:
    import zarr

    t0, nbytes = time.perf_counter(), 0
    for path in sorted(Path(args.dir).glob("step*.zarr")):
        group = zarr.open_group(path, mode="r")
        for _, arr in group.arrays():
            for lo in range(0, arr.shape[-1], args.chunk):
                nbytes += arr[..., lo : lo + args.chunk].nbytes
    return {"seconds": time.perf_counter() - t0, "bytes": nbytes}


def reduce(args) -> dict:
    from pipeline.config import ReduceConfig
    from pipeline.reduce import reduce_model

    paths = [str(p) for p in sorted(Path(args.dir).glob("step*.zarr"))]
    t0 = time.perf_counter()
    cfg = ReduceConfig(quantiles=args.quantiles)
    reduce_model(paths, str(Path(args.dir) / "reduced.zarr"), "synthetic", cfg)
    return {"seconds": time.perf_counter() - t0}


def child(args) -> None:
    res = {"read": read, "reduce": reduce}[args.phase](args)
    res["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tokens", type=int, default=2**21)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument(
        "--chunk", type=int, default=2**18, help="tokens per on-disk chunk of the synthetic stores"
    )
    ap.add_argument("--quantiles", type=float, nargs="*", default=[0.1, 0.5, 0.9])
    ap.add_argument("--dir", default="/tmp/reduce-bench")
    ap.add_argument("--phase", choices=["read", "reduce"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        return child(args)
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    write(args)
    size = sum(f.stat().st_size for f in Path(args.dir).glob("step*.zarr/**/*") if f.is_file())
    print(f"{args.steps} stores of {args.tokens} tokens: {size / 2**20:.0f} MiB on disk")
    results = {}
    for phase in ("read", "reduce"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--phase", phase]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[phase] = json.loads(out.strip().splitlines()[-1])
    nbytes = results["read"]["bytes"]
    for phase, r in results.items():
        print(
            f"{phase:7s} {r['seconds']:7.1f} s  {nbytes / r['seconds'] / 2**20:8.1f} MB/s  "
            f"peak RSS {r['peak_rss'] / 2**20:7.0f} MiB"
        )
    ratio = results["read"]["seconds"] / results["reduce"]["seconds"]
    print(f"reduce/read throughput = {ratio:.2f}   (goal >= 0.5)")
    print(f"store data / reduce peak RSS = {nbytes / results['reduce']['peak_rss']:.1f}")


if __name__ == "__main__":
    main()
