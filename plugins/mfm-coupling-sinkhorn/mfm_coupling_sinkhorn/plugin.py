"""The hook mfm finds through this distribution's ``mfm.plugins`` entry point."""

from __future__ import annotations

from mfm_core import Register, hookimpl

from mfm_coupling_sinkhorn.coupler import SinkhornCoupler


@hookimpl
def register_couplers(register: Register) -> None:
    register("sinkhorn", SinkhornCoupler)
