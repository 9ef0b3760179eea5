"""The gated delta rule on a GPU: `chunk.py` composes the kernels (forward and backward, each a
list of kernel calls), `config.py` chooses them (Mosaic GPU where it takes the shape, else
Triton) and holds the Triton launch knobs (`KernelConfig`). Kernel files are leaves:
`prep_triton.py`, `state_triton.py` (Triton), `prep_mosaic.py`, `prep_mosaic_bwd.py`,
`state_mosaic.py`, `state_mosaic_bwd.py` and `grad_mosaic.py` (Mosaic GPU; the last runs dqk
and the prep backward as one kernel), with `chunk_math.py` (the preps' shared decays and
inverse), `triton_common.py`, `mosaic_common.py` and `layout.py` (the caller's layout) beneath
them. docs/kernels-gpu.md is the map."""
