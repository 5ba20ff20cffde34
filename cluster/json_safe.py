"""Values as strict JSON takes them (RFC 8259 has no NaN or infinity), for every output that writes JSON.

Example::

    json.dumps(json_safe({"mean": float("nan"), "eigvals": np.ones(3)}), allow_nan=False)
    # '{"mean": null, "eigvals": [1.0, 1.0, 1.0]}'

The CLI's printer (``jobs.output``) and the report's plotted numbers (``cluster.report_html``) both use it.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["json_safe"]


def json_safe(obj):
    """``obj`` with non-finite floats as None, numpy values as Python ones, tuples as lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, dict):
        return {k if k is None or isinstance(k, (str, int, float)) else str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f" and np.isfinite(obj).all():
            return obj.tolist()  # the common case, without a walk over every number
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return str(obj)
