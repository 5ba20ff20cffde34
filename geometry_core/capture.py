"""Capture the outputs of named modules during a forward pass, then stop it (or not).

Example::

    (act,) = capture_outputs(G, [G.layer("main.3")], z)          # what main.3 returned
    acts = capture_outputs(cnn, [cnn.features[4]], x, clone=True)
    x, acts = capture_outputs(G, modules, z, clone=True, stop=False)   # the image too

A forward hook records each module's output and, once the last one has run,
raises to end the pass: the rest of the model is not needed. The recorded
tensors never leave the call's graph, so this works under ``torch.func.jvp``,
``vmap`` and ``jacfwd``. The one capture used by layer distances, layer
geometry, activation objectives and the metric of several targets from one
pass (``metric.metric_tensors``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

__all__ = ["capture_outputs"]


class _Captured(Exception):
    """Raised by the last hook: nothing after the captured modules needs to run."""


def capture_outputs(model: Callable, modules: Sequence[nn.Module], *inputs, clone: bool = False,
                    stop: bool = True):
    """The outputs of ``modules`` (in their order) while ``model(*inputs)`` runs; None for one that never ran.

    ``clone=True`` copies each output as it is recorded, so an in-place
    operation after a module that is not the last cannot rewrite it.
    ``stop=False`` lets the pass run to its end and returns ``(model's output,
    outputs)``; with it, clone, as later modules may rewrite any output in place.
    """
    outputs: dict[int, object] = {}

    def hook_for(i: int):
        def hook(_module, _args, output):
            outputs[i] = output.clone() if clone else output
            if stop and len(outputs) == len(modules):
                raise _Captured

        return hook

    handles = [m.register_forward_hook(hook_for(i)) for i, m in enumerate(modules)]
    result = None
    try:
        result = model(*inputs)
    except _Captured:
        pass
    finally:
        for h in handles:
            h.remove()
    captured = [outputs.get(i) for i in range(len(modules))]
    return captured if stop else (result, captured)
