"""Runs that grow: a spec asking more codes of an existing run extends it (ARCHITECTURE.md, "Store").

Example::

    old_n = plan_growth("quickstart", rs.url, rs.attrs("quickstart"), spec)   # None: same run; 64: grows
    grow_run(rs, spec, layouts, old_n)      # arrays resized, the old last chunk reopened, reduce marked stale

A run grows when only ``codes.n`` differs and grows, with the same seed and a run
whose codes are drawn one by one (``code_scheme: per-code``, :mod:`cluster.codes`),
or, for codes from a file, when the longer file starts with the run's codes (their
sha256). Everything else that differs is refused in one line naming the field,
as a different spec is (:class:`~cluster.store.RunExistsError`).

A growth is atomic in effect: the run records ``growing: {from, to, spec}`` before the
first array is resized and clears it with the new identity after the last, so a growth
cut short is never read as a run (:func:`cluster.integrity.refuse_unsettled`), ``status``
says so, and ``resume`` finishes it from the recorded spec (:func:`resume_spec`).
"""

from __future__ import annotations

from .codes import LEGACY_SCHEME, file_sha256_prefix
from .integrity import GROWING, growth_in_progress
from .layout import ARRAYS, CHUNK_RECORDS, GroupLayout
from .states import Status
from .storage import StoreError
from .store import RunExistsError, check_identity

__all__ = ["code_scheme", "grow_run", "plan_growth", "resume_spec"]


def code_scheme(attrs: dict) -> str:
    """How a stored run draws its codes from its seed (a run that records none drew them in one batch)."""
    return str(attrs.get("code_scheme") or LEGACY_SCHEME)


def plan_growth(run: str, url: str, attrs: dict, spec) -> int | None:
    """The run's current number of codes when ``spec`` grows it; None when the identity is the same.

    Raises :class:`RunExistsError` (one line, naming the field) for any other difference, and
    :class:`StoreError` for a run being deleted; a run whose growth stopped part-way accepts
    only the spec it was growing to (which finishes it).
    """
    if attrs.get("status") == Status.DELETING:
        raise StoreError(f"run {run!r} in {url} is being deleted (a `gangeo rm` stopped part-way); "
                         f"run `gangeo rm {run} --yes` to finish deleting it, then start it again")
    rec = growth_in_progress(attrs)
    if rec is not None and int(spec.n_codes) != int(rec.get("to") or -1):
        raise RunExistsError(f"run {run!r} in {url} stopped growing from {rec.get('from')} to {rec.get('to')} "
                             f"codes; run `gangeo resume {run}` to finish that growth first")
    old = dict(attrs.get("identity") or {})
    old.pop("weights", None)  # weights files are compared once hashed (RunStore.create)
    new = spec.identity()
    if old == new:
        return None
    if {k: v for k, v in old.items() if k != "codes"} != {k: v for k, v in new.items() if k != "codes"}:
        check_identity(run, url, old, new)  # raises, naming every field that differs
    was, now = dict(old.get("codes") or {}), dict(new.get("codes") or {})

    def refuse(message: str) -> RunExistsError:
        return RunExistsError(f"run {run!r} in {url}: {message}; choose another run name")

    if ("sha256" in was) != ("sha256" in now):
        source = {True: "a codes file", False: "a seed"}
        raise refuse(f"codes: the run's codes came from {source['sha256' in was]}, "
                     f"the spec's come from {source['sha256' in now]}")
    if "seed" in was and was.get("seed") != now.get("seed"):
        raise refuse(f"codes.seed: the run was drawn from seed {was.get('seed')}, the spec asks "
                     f"{now.get('seed')}; a run keeps its seed")
    a, b = int(was.get("n") or 0), int(now["n"])
    if b < a:
        what = "codes.file: the file holds" if "sha256" in now else "codes.n: the spec asks"
        raise refuse(f"{what} {b} codes, the run has {a}; a run grows, it never shrinks")
    if "sha256" in now and a == b:
        raise refuse(f"codes.file: {spec.codes_file} holds other codes than the run started with (sha256 "
                     f"{str(was.get('sha256'))[:12]} then, {str(now['sha256'])[:12]} now); restore the file")
    if "sha256" in now:
        if file_sha256_prefix(spec.codes_file, a) != was.get("sha256"):
            raise refuse(f"codes.file: the first {a} codes of {spec.codes_file} differ from the run's "
                         f"(sha256 {str(was.get('sha256'))[:12]}); a file extends a run only when it "
                         "starts with the run's codes")
    elif code_scheme(attrs) != "per-code":
        raise refuse(f"codes.n: the run's {a} codes were drawn in one batch (a run made before codes were "
                     "drawn one by one), so more codes would change them; it cannot grow")
    return a


def grow_run(rs, spec, layouts: list[GroupLayout], old_n: int) -> None:
    """Resize the run's groups to ``layouts`` (more codes), then record the new spec and identity.

    The old last chunk, when short, gains rows: its ``done`` entry is cleared so it is
    recomputed whole. Each group's reduce is marked unfinished until the reducers rerun
    over every code. The ``growing`` record first, arrays next, identity last (clearing
    the record): a grow cut short is finished by ``resume`` (or by rerunning the spec);
    every step is idempotent.
    """
    run_g = rs.run_group(spec.name)
    rs.update_attrs(spec.name, **{GROWING: {"from": old_n, "to": int(spec.n_codes), "spec": spec.to_dict()}})
    present = set(run_g.attrs.get("groups", []))
    for lay in layouts:
        if lay.key not in present:
            continue  # a new group: created whole by RunStore.create
        g = rs.group(spec.name, lay.key)
        for name in g.array_keys():
            if name in ARRAYS:
                g[name].resize(lay.shape(name))
            elif name in CHUNK_RECORDS:
                g[name].resize((lay.n_chunks,))
        if old_n % lay.chunk_size:
            g["done"][old_n // lay.chunk_size] = 0
        g.attrs.update(lay.attrs())
        if "reduce" in set(g.group_keys()):
            g["reduce"].attrs["state"] = "reducing"  # over the old codes only: stale until reduced again
    weights = dict(run_g.attrs.get("identity") or {}).get("weights")
    identity = {**spec.identity(), **({"weights": weights} if weights else {})}
    rs.update_attrs(spec.name, identity=identity, spec=spec.to_dict(), **{GROWING: None})


def resume_spec(attrs: dict):
    """The stored spec ``resume`` runs: the one a growth cut short was growing to, else the run's."""
    rec = growth_in_progress(attrs)
    return rec.get("spec") if rec is not None and isinstance(rec.get("spec"), dict) else attrs.get("spec")
