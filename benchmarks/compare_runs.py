"""Compare two runs' results: every Zarr store's variables and coordinates, and every figure.

For refactors that must not change results: run the workflow before and after, then

    .venv/bin/python benchmarks/compare_runs.py BEFORE/results AFTER/results

Each store present in both runs is compared variable by variable (values exactly, NaN equal to
NaN; dtype and dims too); variables only in one run are listed, as are attribute differences.
Figures are compared as decoded pixels. Prints one line per difference and a summary; exits 1
if any value differs. A deliberate renaming of dimensions or variables is compared by value
with ``--rename OLD=NEW`` (applied to the before run), e.g. ``--rename batch=update_batch``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import xarray as xr


def stores(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*.zarr") if (p / "zarr.json").exists())


def compare_store(a: xr.Dataset, b: xr.Dataset) -> tuple[list[str], list[str]]:
    """(value differences, other differences) between two datasets."""
    values, other = [], []
    names_a, names_b = set(a.variables), set(b.variables)
    for name in sorted(names_a - names_b):
        other.append(f"only before: {name}")
    for name in sorted(names_b - names_a):
        other.append(f"only after: {name}")
    for name in sorted(names_a & names_b):
        va, vb = a[name], b[name]
        if va.dims != vb.dims or va.dtype != vb.dtype:
            values.append(f"{name}: {va.dims} {va.dtype} vs {vb.dims} {vb.dtype}")
        elif not np.array_equal(va.values, vb.values, equal_nan=va.dtype.kind == "f"):
            diff = np.nanmax(np.abs(va.values.astype(float) - vb.values.astype(float)))
            values.append(f"{name}: values differ (max |Δ| {diff:.3g})")
        if va.attrs != vb.attrs:
            other.append(f"{name}: attrs {sorted(set(va.attrs) ^ set(vb.attrs))}")
    if a.attrs != b.attrs:
        keys = sorted(k for k in set(a.attrs) | set(b.attrs) if a.attrs.get(k) != b.attrs.get(k))
        other.append(f"dataset attrs differ: {keys}")
    return values, other


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="a dimension or variable renamed between the runs (applied to the before run)",
    )
    args = parser.parse_args()
    renames = dict(r.split("=", 1) for r in args.rename)
    n_values = 0
    before, after = set(stores(args.before)), set(stores(args.after))
    for rel in sorted(before ^ after):
        print(f"{rel}: only {'before' if rel in before else 'after'}")
    for rel in sorted(before & after):
        old = xr.open_zarr(args.before / rel)
        old = old.rename({k: v for k, v in renames.items() if k in old.dims or k in old.variables})
        values, other = compare_store(old, xr.open_zarr(args.after / rel))
        n_values += len(values)
        for line in values + other:
            print(f"{rel}: {line}")
    from matplotlib.image import imread

    figures = sorted(p.relative_to(args.before) for p in (args.before / "figures").glob("*.png"))
    same_figures = 0
    for rel in figures:
        other = args.after / rel
        if not other.exists():
            print(f"{rel}: only before")
            continue
        a, b = imread(args.before / rel), imread(other)
        if a.shape == b.shape and np.array_equal(a, b):
            same_figures += 1
        else:
            changed = np.mean(np.any(a != b, axis=-1)) if a.shape == b.shape else 1.0
            print(f"{rel}: pixels differ ({a.shape} vs {b.shape}, {changed:.2%} of pixels)")
    print(
        f"{len(before & after)} stores compared, {n_values} value differences; "
        f"{same_figures}/{len(figures)} figures identical"
    )
    return 1 if n_values else 0


if __name__ == "__main__":
    sys.exit(main())
