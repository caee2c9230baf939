"""``fastgeo convert``: rewrite a generator file in the safe format (e.g. a file of fastgeo's first
format, whose decoder is an exported chain of standard layers: linear, convolutions, norms, activations)."""

from __future__ import annotations

import argparse
import re
import sys

from ..io import load_extra, load_generator, save_generator
from . import inputs


def add_parser(sub: argparse._SubParsersAction) -> None:
    about = "rewrite a generator file in the safe format (structure as data)"
    p = sub.add_parser(
        "convert",
        help=about,
        description=f"{about[0].upper()}{about[1:]}: the decoder, a chain of standard layers, is stored as "
        "JSON and tensors, and loading it runs no code (a file of fastgeo's first format, an export).",
    )
    p.add_argument("source", help="generator file to read")
    p.add_argument("target", help="safe generator file to write (.safetensors)")
    p.add_argument("--trust", action="store_true", help="the source holds code: load it (trusted files only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    source = inputs.readable_file("source", args.source)
    target = inputs.writable_file("target", args.target, ".safetensors")
    inputs.distinct("target", target, "the source", source)
    metric = load_generator(source, trust=args.trust)
    try:
        save_generator(target, metric, extra=load_extra(source))
    except ValueError as e:
        found = re.search(r"no structure fastgeo can store as data(?: \((.*)\))?: it must be", str(e))
        if found is None:
            raise
        why = found.group(1) or "operations outside fastgeo.decoders.structure.LAYERS"
        if "TorchScript" in why:  # its layers cannot be read back from the compiled file
            raise ValueError(
                f"{source}: a TorchScript decoder's layers cannot be read back as data: save the generator "
                "again from its Python module (fastgeo.save_generator, the safe format is the default), or "
                "keep using the file as it is (--trust)"
            ) from e
        raise ValueError(
            f"{source}: its decoder is not a chain of standard layers that the safe format can store "
            f"({why}); keep using the file as it is (--trust)"
        ) from e
    print(f"{target}: safe generator file (d = {metric.latent_dim}, D = {metric.data_dim})", file=sys.stderr)
    return 0
