"""Check a whole results tree: every Zarr store against its manifest (``pipeline.store``).

For results copied to or from a cluster, or kept for a while: ``python -m pipeline.verify
results/`` names every store that is damaged (a chunk or a metadata file missing, changed or
added), incomplete or written without a manifest, and exits non-zero if any is. It reads the
files only; nothing is written or deleted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.store import StoreError, verify_store


def stores(root: str | os.PathLike) -> list[Path]:
    """The stores under ``root``: directories named ``*.zarr``, not writers' temporaries."""
    found = []
    for directory, subdirs, _ in os.walk(root):
        for name in sorted(subdirs):
            if name.endswith(".zarr") and not name.startswith("."):
                found.append(Path(directory) / name)
        subdirs[:] = [d for d in sorted(subdirs) if not d.endswith(".zarr")]
    return sorted(found)


def verify_tree(root: str | os.PathLike) -> dict[Path, str | None]:
    """Each store under ``root`` and what is wrong with it (None: it is as written)."""
    out = {}
    for path in stores(root):
        try:
            verify_store(path)
            out[path] = None
        except StoreError as err:
            out[path] = str(err)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.verify", description=__doc__)
    parser.add_argument("root", nargs="?", default="results", help="a results tree")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        print(f"{args.root} is not a directory; give a results tree", file=sys.stderr)
        return 2
    result = verify_tree(args.root)
    bad = {p: why for p, why in result.items() if why}
    for path, why in result.items():
        print(f"{'DAMAGED' if why else 'ok':8} {path}" + (f"\n         {why}" if why else ""))
    print(f"{len(result)} stores checked under {args.root}: {len(bad)} damaged")
    if not result:
        print(f"no Zarr stores under {args.root}", file=sys.stderr)
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
