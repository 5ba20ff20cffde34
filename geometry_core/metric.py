"""The metric tensor a distance induces on a generator's latent space.

``H(z0)`` is the Hessian over ``z`` of ``d(G(z0), G(z))`` at ``z = z0`` (Wang &
Ponce, ICLR 2021). A distance comes in one of two forms (``Distance.has_phi``):

- ``c * ||phi(x) - phi(x0)||^2``: the residual vanishes at ``z0``, so
  ``H = 2 c J^T J`` with ``J`` the Jacobian of ``phi(G(z))``.
- a scalar ``d(x0, x)`` (SSIM): ``d >= 0`` and ``d(x0, x0) = 0``, so its image
  gradient vanishes at ``x0`` and ``H = J_G^T A J_G`` with ``J_G = dG/dz`` and
  ``A = Hessian over x of d(x0, x)`` at ``x = x0``.

Four methods give the same matrix within tolerance:

- ``exact``: ``J`` (or ``J_G``) by forward-mode products (``torch.func.jvp``
  vectorised with ``vmap`` over the tangent basis), chunked over tangents to bound
  memory. The primal runs once per chunk, so it costs about one batched forward of
  D codes. For a scalar distance, ``A J_G`` follows from D image-space
  Hessian-vector products (forward over reverse, vectorised the same way).
- ``bp``: the paper's "Full BackProp" reference: one double-backward pass per row.
- ``lanczos-backward`` / ``lanczos-forward``: the top-k eigenpairs by Lanczos
  (``scipy.sparse.linalg.eigsh``) on Hessian-vector products, by double backward
  or by the central difference of gradients; they return ``V diag(l) V^T``.
  ``bp`` and Lanczos differentiate the distance itself, in either form.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.func import jvp, vmap

from .errors import GeometryError
from .generators.base import check_latents
from .spectrum import fix_signs, from_eigen

__all__ = ["METHODS", "default_eps", "forward_jacobian", "hvp", "metric_eigs", "metric_tensor", "metric_tensors"]

METHODS = ("exact", "bp", "lanczos-backward", "lanczos-forward")
_LANCZOS = {"lanczos-backward": "backward", "lanczos-forward": "forward"}
# Activations of one chunk: a forward-mode pass keeps the primal and the tangent of the
# widest layer's input and output per tangent, and temporaries about as many again
# (StyleGAN2's modulated convolutions, upsampling); 8 copies of the widest output bounds it.
_LIVE_COPIES = 8
# Memory a chunk's activations may take: a quarter of the free GPU memory, or 2 GiB on CPU.
_GPU_FRACTION = 0.25
_CPU_ACTIVATION_BYTES = 2**31


def metric_tensor(
    G: nn.Module,
    distance: nn.Module,
    z: torch.Tensor,
    *,
    method: str = "exact",
    topk: int | None = None,
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The metric tensor ``H(z)``: ``(D, D)`` for ``z`` of shape ``(D,)``, ``(B, D, D)`` for ``(B, D)``.

    Example::

        H = metric_tensor(G, load_distance("lpips-alex"), G.sample(4))   # (4, D, D)
        H = metric_tensor(G, d, z, method="lanczos-backward", topk=20)   # rank 20

    ``distance``: either form (see the module doc). ``method``: one of ``METHODS``.
    ``topk`` (Lanczos only, ``1 <= topk < D``, default ``min(D - 1, 20)``): the rank
    of the reconstruction. ``chunk_size``
    (``exact`` only): tangents per forward-mode pass; by default as many as keep
    the Jacobian chunk under 256 MiB and the chunk's activations (8 copies of the
    widest layer output per tangent) under a quarter of the free GPU memory, or
    2 GiB on CPU. ``dtype``: if given, ``G`` and ``distance``
    are cast to it in place for the call and cast back afterwards (so a call is not
    thread-safe against other users of the same modules); the result has that dtype.
    ``z`` is moved to ``G``'s device and the result lives there.
    """
    z, single, dtype = _parse(G, z, method, dtype, "metric_tensor")
    D = z.shape[-1]
    if method in _LANCZOS:
        topk = _parse_topk(topk, D, "metric_tensor")
    elif topk is not None:
        raise GeometryError(f"metric_tensor: topk applies to the Lanczos methods only, got method={method!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise GeometryError(f"metric_tensor: chunk_size must be a positive int, got {chunk_size!r}")
    with _cast((G, distance), dtype):
        if method == "exact":
            H = _exact(G, distance, z, chunk_size)
        elif method == "bp":
            H = _bp(G, distance, z)
        else:
            vals, vecs = _lanczos(G, distance, z, topk, _LANCZOS[method], None)
            H = from_eigen(vals, vecs)
    H = 0.5 * (H + H.transpose(-1, -2))
    return H[0] if single else H


def metric_tensors(
    G: nn.Module,
    distances: Mapping[str, nn.Module],
    z: torch.Tensor,
    *,
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """The ``exact`` metric of several distances from one forward-mode pass of ``G``: ``{name: H}``.

    Example::

        d = {t: load_distance(t, generator=G) for t in ("mse", "lpips-alex", "ssim", "layer:main.3")}
        H = metric_tensors(G, d, G.sample(4))   # {"mse": (4, D, D), ...}
        # H[t] equals metric_tensor(G, d[t], z) up to float rounding

    The generator's tangents are pushed forward once, in tangent chunks bounded
    as for ``metric_tensor`` (every target's outputs counted together): each
    image distance's ``phi`` runs on the image inside that pass (``H = 2c JᵀJ``),
    a scalar distance (SSIM) gets ``J_Gᵀ A J_G`` from the pass's image Jacobian,
    and a ``layer:`` distance of ``G`` reads its layer's output captured in the
    same pass. A distance with a representation of its own (other than a layer
    of ``G``) is computed by itself. ``chunk_size`` and ``dtype`` as for
    ``metric_tensor``; ``z`` of shape ``(D,)`` gives ``(D, D)`` matrices.
    """
    if not isinstance(distances, Mapping) or not distances:
        raise GeometryError(f"metric_tensors: distances must be a non-empty {{name: Distance}} mapping, "
                            f"got {type(distances).__name__}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise GeometryError(f"metric_tensors: chunk_size must be a positive int, got {chunk_size!r}")
    z, single, dtype = _parse(G, z, "exact", dtype, "metric_tensors")
    shared = {name: d for name, d in distances.items() if _shares_pass(d)}
    with _cast((G, *distances.values()), dtype):
        out = _exact_shared(G, shared, z, chunk_size) if shared else {}
        out.update({name: _exact(G, d, z, chunk_size) for name, d in distances.items() if name not in shared})
    out = {name: 0.5 * (out[name] + out[name].transpose(-1, -2)) for name in distances}
    return {name: H[0] for name, H in out.items()} if single else out


def metric_eigs(
    G: nn.Module,
    distance: nn.Module,
    z: torch.Tensor,
    *,
    method: str = "lanczos-backward",
    topk: int | None = None,
    eps: float | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``topk`` eigenpairs of ``H(z)`` by Lanczos, without forming the matrix.

    Example::

        vals, vecs = metric_eigs(G, d, z, topk=10)   # (10,), (D, 10) for z of shape (D,)

    Returns eigenvalues descending (``(k,)`` or ``(B, k)``) and eigenvectors as
    columns (``(D, k)`` or ``(B, D, k)``), signs fixed as in ``spectrum.eigen``.
    ``eps`` is the step of ``lanczos-forward`` (see :func:`hvp`).
    """
    if method not in _LANCZOS:
        raise GeometryError(f"metric_eigs: method must be one of {sorted(_LANCZOS)}, got {method!r}")
    z, single, dtype = _parse(G, z, method, dtype, "metric_eigs")
    topk = _parse_topk(topk, z.shape[-1], "metric_eigs")
    with _cast((G, distance), dtype):
        vals, vecs = _lanczos(G, distance, z, topk, _LANCZOS[method], eps)
    return (vals[0], vecs[0]) if single else (vals, vecs)


def hvp(
    G: nn.Module,
    distance: nn.Module,
    z0: torch.Tensor,
    v: torch.Tensor,
    *,
    method: str = "backward",
    eps: float | None = None,
) -> torch.Tensor:
    """``H(z0) @ v`` without forming ``H``; ``z0`` and ``v`` of shape ``(D,)`` or ``(B, D)``.

    Example::

        Hv = hvp(G, d, z0, v)                          # double backward
        Hv = hvp(G, d, z0, v, method="forward")        # central difference of gradients

    ``forward``: ``(g(z0 + e v) - g(z0 - e v)) / (2 e)`` with ``g`` the gradient of
    ``d(G(z0), G(z))`` over ``z``; that is ``H v`` (not half of it). ``e`` is
    ``eps / ||v||`` per code, ``eps`` defaulting to :func:`default_eps`.
    """
    if method not in ("backward", "forward"):
        raise GeometryError(f"hvp: method must be 'backward' or 'forward', got {method!r}")
    z0, single, _ = _parse(G, z0, None, None, "hvp")
    if not isinstance(v, torch.Tensor) or v.shape[-1] != z0.shape[-1] or v.ndim != (1 if single else 2):
        got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise GeometryError(f"hvp: expected v shaped like z0 {tuple(z0.shape[single:])}, got {got}")
    v = v.to(device=z0.device, dtype=z0.dtype).reshape(z0.shape)
    if not torch.isfinite(v).all():
        raise GeometryError("hvp: v contains NaN or Inf")
    if eps is not None and not (isinstance(eps, (int, float)) and eps > 0):
        raise GeometryError(f"hvp: eps must be a positive number, got {eps!r}")
    if method == "backward":
        out = _hvp_backward(G, distance, z0)(v)
    else:
        out = _hvp_forward(G, distance, z0, eps)(v)
    return out[0] if single else out


# --- validation and dtype handling ---------------------------------------------------


def _parse(G, z, method, dtype, caller):
    """Check method (None: not checked), latent codes and dtype for ``caller`` (named in messages).

    Returns (z as (B, D) on G's device, single, dtype).
    """
    if method is not None and method not in METHODS:
        raise GeometryError(f"{caller}: method must be one of {list(METHODS)}, got {method!r}")
    latent_dim = getattr(G, "latent_dim", None)
    if not isinstance(latent_dim, int):
        raise GeometryError(f"{caller}: G must be a Generator with latent_dim, got {type(G).__name__}")
    check_latents(z, latent_dim, name=getattr(G, "name", "generator"))
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise GeometryError(f"{caller}: dtype must be a floating torch.dtype, got {dtype!r}")
    if dtype is None:
        # A generator without floating weights computes in the dtype of its input.
        weights = [t for t in (*G.parameters(), *G.buffers()) if t.is_floating_point()]
        dtype = weights[0].dtype if weights else z.dtype
    single = z.ndim == 1
    z = z.detach().to(device=G.device, dtype=dtype)
    return (z.unsqueeze(0) if single else z), single, dtype


def _parse_topk(topk, D, caller):
    if topk is None:
        topk = min(D - 1, 20)
    if not isinstance(topk, int) or isinstance(topk, bool) or not 1 <= topk < D:
        raise GeometryError(f"{caller}: topk must be an int with 1 <= topk < {D}, got {topk!r}")
    return topk


@contextlib.contextmanager
def _cast(modules, dtype) -> Iterator[None]:
    """Cast the floating parameters and buffers of ``modules`` to ``dtype``, then back."""
    saved = []
    for m in modules:
        for t in (*m.parameters(), *m.buffers()):
            if t.is_floating_point() and t.dtype != dtype:
                saved.append((t, t.dtype))
                t.data = t.data.to(dtype)
    try:
        yield
    finally:
        for t, orig in saved:
            t.data = t.data.to(orig)


# --- exact: forward-mode Jacobian ----------------------------------------------------


def _exact(G, distance, z, chunk_size):
    if not distance.has_phi:
        return _exact_scalar(G, distance, z, chunk_size)
    B, D = z.shape
    f = lambda x: distance.represent(G, x)  # noqa: E731
    if chunk_size is None:
        M, widest = _widths(f, z, (G, distance))
        chunk_size = _default_chunk(B, D, M, z, widest)
    with torch.no_grad():  # forward mode only: no graph to keep
        J = forward_jacobian(f, z, chunk_size=chunk_size, caller="metric_tensor")  # (D, B, M)
    # H_b = 2 c J_b^T J_b, with J stored tangent-major.
    return 2.0 * distance.c * torch.einsum("ibm,jbm->bij", J, J)


def _exact_scalar(G, distance, z, chunk_size):
    """``H_b = J_b^T A_b J_b``: ``J_G`` by forward mode, ``A J_G`` by image-space HVPs."""
    B, D = z.shape
    with torch.no_grad():
        x0 = G(z)
    if chunk_size is None:
        _, widest = _widths(lambda x: G(x).flatten(1), z, (G, distance))
        chunk_size = _default_chunk(B, D, x0[0].numel(), z, widest)
    with torch.no_grad():  # forward mode, and reverse mode inside torch.func.grad only
        J = forward_jacobian(lambda x: G(x).flatten(1), z, chunk_size=chunk_size, caller="metric_tensor")  # (D, B, N)
        return _scalar_from_jacobian(distance, x0, J, chunk_size)


def _scalar_from_jacobian(distance, x0, J, chunk_size):
    """``H_b = J_b^T A_b J_b`` from images ``x0`` (B, ...) and their Jacobian ``J`` (D, B, N)."""
    closed = getattr(distance, "pullback", lambda *_: None)(x0, J)
    if closed is not None:
        return closed
    D, B = J.shape[:2]
    shape, x0_flat = x0.shape[1:], x0.flatten(1)

    def grad_d(x_flat):
        # Gradient over x of sum_b d(x0_b, x_b); a batch of k repeats (the no-vmap
        # fallback of _jvp_chunk) is compared with x0 repeated the same way.
        ref = x0.repeat(x_flat.shape[0] // B, 1, 1, 1)
        return torch.func.grad(lambda x: distance(ref, x.reshape(-1, *shape)).sum())(x_flat)

    H = x0.new_empty(B, D, D)
    for start in range(0, D, chunk_size):
        AJ = _jvp_chunk(grad_d, x0_flat, J[start : start + chunk_size], "metric_tensor")  # (k, B, N): A J_G
        H[:, :, start : start + AJ.shape[0]] = torch.einsum("ibn,jbn->bij", J, AJ)
    return H


def _shares_pass(distance) -> bool:
    """Whether ``distance``'s metric can come from the generator's shared pass (see metric_tensors)."""
    from .distances.base import Distance
    from .distances.layer import LayerDistance

    if isinstance(distance, LayerDistance) or not distance.has_phi:
        return True
    return type(distance).represent is Distance.represent  # phi(G(z)): phi applies to the image


def _exact_shared(G, distances, z, chunk_size):
    """``{name: H}`` (B, D, D) of image, scalar and layer distances from one forward-mode pass of ``G``."""
    from .capture import capture_outputs
    from .distances.layer import LayerDistance

    layers = [n for n, d in distances.items() if isinstance(d, LayerDistance)]
    images = [n for n in distances if n not in layers]
    scalar = [n for n in images if not distances[n].has_phi]
    phi = [n for n in images if distances[n].has_phi]
    modules = [G.layer(distances[n].layer_name) for n in layers]

    def f(x):  # (image if a scalar distance needs it, phi of each image distance, each layer)
        if images:  # clone: a later in-place op must not rewrite a captured output
            image, acts = capture_outputs(G, modules, x, clone=True, stop=False)
        else:
            image, acts = None, capture_outputs(G, modules, x, clone=True)
        outs = [image.flatten(1)] if scalar else []
        outs += [distances[n].phi(image) for n in phi]
        for n, act in zip(layers, acts):
            if not isinstance(act, torch.Tensor):
                raise GeometryError(f"{n}: the layer did not output a tensor during G(z)")
            flat = act.flatten(1)
            outs.append(flat / math.sqrt(flat.shape[1]))  # LayerDistance.represent's scaling
        return tuple(outs)

    B, D = z.shape
    if chunk_size is None:
        M, widest = _widths(f, z, (G, *distances.values()))
        chunk_size = _default_chunk(B, D, M, z, widest)
    with torch.no_grad():  # forward mode, and reverse mode inside torch.func.grad only
        Js = list(forward_jacobian(f, z, chunk_size=chunk_size, caller="metric_tensors"))
        J_image = Js.pop(0) if scalar else None
        out = {n: 2.0 * distances[n].c * torch.einsum("ibm,jbm->bij", J, J) for n, J in zip(phi + layers, Js)}
        if scalar:
            x0 = G(z)
            out.update({n: _scalar_from_jacobian(distances[n], x0, J_image, chunk_size) for n in scalar})
    return out


def _widths(f, z, modules) -> tuple[int, int]:
    """``f``'s output size per code, and the largest output of any submodule per code.

    ``f``'s own outputs are not activations of the pass: they are the Jacobian's
    columns, held once per tangent (see forward_jacobian), not ``_LIVE_COPIES`` times.
    """
    widest = 0

    def hook(_module, _inputs, out):
        nonlocal widest
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.ndim:
                widest = max(widest, t.numel() // max(1, t.shape[0]))

    handles = [m.register_forward_hook(hook) for module in modules for m in module.modules()]
    try:
        with torch.no_grad():
            out = f(z[:1])
            M = sum(o.shape[-1] for o in out) if isinstance(out, tuple) else out.shape[-1]
    finally:
        for h in handles:
            h.remove()
    return M, widest or M


def _activation_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(_GPU_FRACTION * free)
    return _CPU_ACTIVATION_BYTES


def _default_chunk(B, D, M, z, widest):
    """Tangents per chunk: the chunk's activations within budget.

    The Jacobian (D, B, M) is held whole whatever the chunk (the metric needs every pair
    of its columns) and a chunk's columns add at most as much again, so the Jacobian
    does not bound the chunk: bounding it only cost passes (4 instead of 1 for
    StyleGAN2-256's 20 layers at 8 tangents).
    """
    by_activations = _activation_budget(z.device) // (B * widest * z.element_size() * _LIVE_COPIES)
    return max(1, min(D, by_activations))


def forward_jacobian(f, z: torch.Tensor, *, chunk_size: int | None = None, caller: str = "forward_jacobian"):
    """Jacobian of a batched map ``f: (B, D) -> (B, M)`` at codes ``z`` (B, D), tangent-major: ``(D, B, M)``.

    The one forward-mode engine of the library: ``torch.func.jvp`` vectorised with
    ``vmap`` over ``chunk_size`` basis tangents at a time (default: all D), with a
    repeated-batch fallback for modules that refuse ``vmap``. A map returning a
    tuple of ``(B, M_l)`` tensors gives a tuple of Jacobians. ``caller`` names the
    public function in the error raised when the model lacks forward-mode AD.
    """
    B, D = z.shape
    chunk_size = chunk_size or D
    eye = torch.eye(D, dtype=z.dtype, device=z.device)
    out = None
    for start in range(0, D, chunk_size):
        tangents = eye[start : start + chunk_size].unsqueeze(1).expand(-1, B, D)
        cols = _jvp_chunk(f, z, tangents, caller)  # (k, B, M), or a tuple of them
        parts = cols if isinstance(cols, tuple) else (cols,)
        if out is None:
            if len(parts[0]) == D:
                return cols
            # One buffer written chunk by chunk: concatenating would hold the Jacobian twice.
            out = tuple(p.new_empty((D, *p.shape[1:])) for p in parts)
        for o, p in zip(out, parts):
            o[start : start + len(p)] = p
    return out if isinstance(cols, tuple) else cast("tuple[torch.Tensor, ...]", out)[0]  # D >= 1: the loop set it


_NO_FORWARD_AD = ("forward AD", "forward-mode", "jvp", "functorch transforms", "setup_context")


def _jvp_chunk(f, z, tangents, caller):
    """Jacobian-vector products for a chunk of tangents (k, B, D) -> (k, B, M) (a tuple for a tuple map)."""
    try:
        return vmap(lambda t: jvp(f, (z,), (t,))[1])(tangents)
    except RuntimeError as err:
        if "vmap" not in str(err):
            _raise_if_no_forward_ad(err, caller)
            raise
    # Some modules refuse vmap: feed the tangents as a batch of repeated codes instead
    # (about 3x slower on dcgan-faces, as the primal is recomputed per tangent).
    k, B, D = tangents.shape
    try:
        _, out = jvp(f, (z.repeat(k, 1),), (tangents.reshape(k * B, D),))
    except RuntimeError as err:
        _raise_if_no_forward_ad(err, caller)
        raise
    if isinstance(out, tuple):
        return tuple(o.reshape(k, B, -1) for o in out)
    return out.reshape(k, B, -1)


def _raise_if_no_forward_ad(err: RuntimeError, caller: str) -> None:
    if any(word in str(err) for word in _NO_FORWARD_AD):
        first = str(err).splitlines()[0][:200]
        hint = "use method='bp'" if caller.startswith("metric_tensor") else "this map cannot be differentiated forward"
        what = "method 'exact'" if caller.startswith("metric_tensor") else "forward-mode Jacobians"
        raise GeometryError(
            f"{caller}: {what} needs forward-mode AD, which this model lacks ({first}); {hint}") from None


# --- bp: the paper's double-backward reference ---------------------------------------


def _objective(G, distance, z0) -> Callable[[torch.Tensor], torch.Tensor]:
    """``z -> sum_b d(G(z0_b), G(z_b))`` with the reference computed once, in either form."""
    with torch.no_grad():
        ref = distance.represent(G, z0) if distance.has_phi else G(z0)
    if distance.has_phi:
        return lambda z: distance.c * (distance.represent(G, z) - ref).pow(2).sum()
    return lambda z: distance(ref, G(z)).sum()


def _gradient_fn(G, distance, z0) -> Callable[[torch.Tensor], torch.Tensor]:
    """``g(z) = grad_z d(G(z0), G(z))`` for (B, D) codes, differentiable (create_graph)."""
    objective = _objective(G, distance, z0)

    def g(z):
        with torch.enable_grad():
            z = z if z.requires_grad else z.clone().requires_grad_(True)
            (grad_z,) = torch.autograd.grad(objective(z), z, create_graph=True)
        return grad_z

    return g


def _bp(G, distance, z0):
    B, D = z0.shape
    with torch.enable_grad():
        z = z0.clone().requires_grad_(True)
        grad = _gradient_fn(G, distance, z0)(z)
        rows = []
        for i in range(D):
            # Codes are independent (eval mode), so one pass gives row i of every H_b.
            (row,) = torch.autograd.grad(grad[:, i].sum(), z, retain_graph=i < D - 1)
            rows.append(row)
    return torch.stack(rows, dim=1)  # (B, D, D)


# --- Hessian-vector products and Lanczos ---------------------------------------------


def _hvp_backward(G, distance, z0):
    """``v -> H v`` by double backward; the gradient graph is built once and reused."""
    with torch.enable_grad():
        z = z0.clone().requires_grad_(True)
        grad = _gradient_fn(G, distance, z0)(z)

    def apply(v):
        with torch.enable_grad():
            (out,) = torch.autograd.grad(grad, z, grad_outputs=v, retain_graph=True)
        return out.detach()

    return apply


def _hvp_forward(G, distance, z0, eps):
    """``v -> H v`` by the central difference of gradients at ``z0 +- e v``."""
    g = _gradient_fn(G, distance, z0)
    base = eps if eps is not None else default_eps(z0.dtype)

    def apply(v):
        norm = v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
        e = base / norm
        return ((g(z0 + e * v) - g(z0 - e * v)) / (2.0 * e)).detach()

    return apply


def _lanczos(G, distance, z, topk, kind, eps):
    """Top-``topk`` eigenpairs per code: ((B, k), (B, D, k)) in z's dtype and device."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    B, D = z.shape
    # A fixed start vector keeps results reproducible (eigsh draws one at random).
    v0 = np.random.default_rng(0).standard_normal(D)
    # Ritz values converge about quadratically in the residual: eps ** 0.75 leaves
    # eigenvalues near working precision and saves restarts (about 30% fewer HVPs).
    tol = torch.finfo(z.dtype).eps ** 0.75
    vals, vecs = [], []
    for b in range(B):
        zb = z[b : b + 1]
        apply = _hvp_backward(G, distance, zb) if kind == "backward" else _hvp_forward(G, distance, zb, eps)

        def matvec(x, apply=apply):
            v = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(1, D), dtype=z.dtype, device=z.device)
            return apply(v).reshape(D).double().cpu().numpy()

        op = LinearOperator((D, D), matvec=matvec, dtype=np.float64)
        w, u = eigsh(op, k=topk, which="LA", v0=v0, tol=tol)
        order = np.argsort(w)[::-1].copy()
        vals.append(torch.from_numpy(w[order].copy()))
        vecs.append(torch.from_numpy(u[:, order].copy()))
    vals_t = torch.stack(vals).to(device=z.device, dtype=z.dtype)
    vecs_t = fix_signs(torch.stack(vecs)).to(device=z.device, dtype=z.dtype)
    return vals_t, vecs_t


def default_eps(dtype: torch.dtype) -> float:
    """The default central-difference step for ``dtype``: ``finfo.eps ** (1/3) / 5``.

    ``eps ** (1/3)`` balances O(e^2) truncation against round-off for smooth maps;
    ReLU kinks make the truncation error O(e), hence the smaller step (about 1e-3
    in float32, 1e-6 in float64; measured on dcgan-faces).
    """
    return math.pow(torch.finfo(dtype).eps, 1.0 / 3.0) / 5.0
