"""Compiled backends of the ``torch.ops.fastgeo`` operators (one module per backend)."""
