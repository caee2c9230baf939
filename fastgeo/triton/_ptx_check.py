"""Compile every Triton kernel to PTX for a GPU architecture without a GPU (ahead of time).

Catches what the interpreter cannot: unsupported ops, dtypes or constexpr use in real codegen.
Run with TRITON_INTERPRET unset: ``python -m fastgeo.triton._ptx_check [sm]`` (default 90).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("unset TRITON_INTERPRET: interpreted kernels cannot be compiled", file=sys.stderr)
        return 2
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import _rbf_precision as rp
    from . import _rbf_segment_sqdist as rss
    from . import _segment_sqdist as ss

    args = sys.argv[1:] if argv is None else argv
    target = GPUTarget("cuda", int(args[0]) if args else 90, 32)
    blocks = {"BLOCK_M": 32, "BLOCK_K": 32, "BLOCK_D": 64, "PREC": "ieee"}
    cases = [
        (rss._fwd_kernel, {**blocks, "SINGLE_K": s}) for s in (True, False)
    ] + [
        (rss._bwd_kernel, {**blocks, "SINGLE_K": s, "DL": 2, "NEED_W": True, "NEED_ZETA": True})
        for s in (True, False)
    ] + [
        (rp._bwd_z_kernel, {**blocks, "SINGLE_K": s, "DL": 4}) for s in (True, False)
    ] + [
        (rp._fwd_kernel, blocks),
        (rp._features_kernel, {"BLOCK_M": 32, "BLOCK_K": 32}),
        (ss._fwd_kernel, {"BLOCK_R": 16, "BLOCK_D": 128}),
        (ss._bwd_kernel, {"BLOCK_R": 16, "BLOCK_D": 128}),
    ]
    # The tensor-core candidate for float32 products (FASTGEO_TRITON_DOT=tf32x3) must compile too.
    cases += [(fn, {**consts, "PREC": "tf32x3"}) for fn, consts in cases if "PREC" in consts]
    failed = 0
    for fn, consts in cases:
        for dt in ("fp32", "fp64") if consts.get("PREC") != "tf32x3" else ("fp32",):
            # Arguments named *_ptr are pointers to the op's dtype, the rest int32 scalars.
            sig = {a: "constexpr" if a in consts else (f"*{dt}" if a.endswith("_ptr") else "i32")
                   for a in fn.arg_names}
            name = f"{fn.fn.__module__.rsplit('.', 1)[-1]}.{fn.fn.__name__}"
            label = f"{name} {dt} {consts.get('SINGLE_K', '')} {consts.get('PREC', '')}"
            try:
                kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=target)
                ptx, shared = len(kernel.asm["ptx"]), kernel.metadata.shared
                print(f"ok   {label}: {ptx} chars of PTX, {shared} B of shared memory")
            except Exception as exc:  # report every failure, not just the first
                failed += 1
                print(f"FAIL {label}: {exc!r}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
