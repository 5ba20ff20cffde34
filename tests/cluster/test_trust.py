"""The gate of a stored spec (``cluster.trust``): code named in a store is imported only when the caller
passes ``allow_import=True`` itself, never because the store says so. The commands that read a stored spec,
refusing and honouring ``--allow-import``: tests/jobs/test_trust.py."""

from __future__ import annotations

import pytest

from cluster.trust import ImportNotAllowedError, gate_stored_spec
from tests.support.runs import tanh_spec


def test_gate_ignores_the_stores_own_flag():
    raw = tanh_spec("g")
    with pytest.raises(ImportNotAllowedError, match="arch='torch.nn:Tanh'"):
        gate_stored_spec(raw, run="g", allow_import=False)
    for flag in (1, "yes", None):
        with pytest.raises(ImportNotAllowedError):
            gate_stored_spec(raw, run="g", allow_import=flag)
    gated = gate_stored_spec(raw, run="g", allow_import=True)
    assert gated["generators"][0]["options"]["allow_import"] is True
    plain = tanh_spec("p", generators=[{"name": "dcgan-faces", "options": {"allow_import": True}}])
    assert gate_stored_spec(plain, run="p", allow_import=False) is plain  # nothing there imports code
