"""``python -m fastgeo.demo [--out DIR] [--seed S] [--quick] [--no-progress]``: ``fastgeo demo``
(the same options, checks and one-line errors)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from ..cli import main as fastgeo_main

    return fastgeo_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
