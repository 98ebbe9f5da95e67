"""mfm-coupling-sinkhorn: the BatchEOT coupler ``sinkhorn`` for mfm, as a separate plugin.

``sinkhorn_plan`` computes the entropic OT plan of a cost matrix; ``SinkhornCoupler`` draws
training pairs from it. mfm finds the coupler through the ``mfm.plugins`` entry point, which
names ``mfm_coupling_sinkhorn.plugin``.
"""

from mfm_coupling_sinkhorn.coupler import SinkhornCoupler, draw_from_rows, draw_permutation
from mfm_coupling_sinkhorn.sinkhorn import SinkhornResult, sinkhorn_plan

__all__ = [
    "SinkhornCoupler",
    "SinkhornResult",
    "draw_from_rows",
    "draw_permutation",
    "sinkhorn_plan",
]
