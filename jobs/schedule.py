"""`gangeo schedule`: recurring sweeps from cron expressions, submitted as Ray jobs.

Example::

    gangeo schedule add nightly --cron "0 3 * * *" --spec jobs/examples/quickstart.yaml \\
        --address http://head:8265 --store s3://bucket/runs [--overlap skip|queue] [--replace]
    gangeo schedule list --store s3://bucket/runs          # with each schedule's next fire time
    gangeo schedule run-due --store s3://bucket/runs        # from an outside cron, or:
    gangeo schedule daemon --store s3://bucket/runs         # run-due every minute

**Each fire is its own run.** The fire at time ``T`` (UTC) runs the schedule's
spec under the run name ``f"{name}-{T:%Y%m%dT%H%M}Z"`` (``name`` the
schedule's; it replaces the spec's own name), e.g.
``nightly-20261126T0300Z`` (:func:`fire_run_name`), which is also its Ray
submission id. The spec's seed stays, so every fire is a fresh, complete run
of the same codes, and each fire's results are addressed by that name
(``gangeo status nightly-20261126T0300Z``). (The alternative, one run that
grows by a block of codes per fire, would make a fire's results depend on every
earlier one; separate runs can be compared, verified and removed one by one.)

State lives in the results store (attributes of the ``_schedules`` group): per
schedule its cron expression, the validated spec, the Ray job server, the
overlap policy and the last fire. A fire is recorded after Ray accepts it; a
crash in between resubmits the same submission id and spec on restart, which
:func:`jobs.submit.submit_job` reports as the existing job, so a restart neither
repeats nor skips a due run. A failed submission is not recorded and is retried
at the next check.

**Overlap.** A fire due while the previous fire's job is still pending or
running follows the schedule's policy: ``skip`` (the default) records the fire
as skipped and logs one line saying so; ``queue`` keeps it waiting and submits
it at the first check after the previous job ended. At most one fire waits: a
later one replaces it and the replaced one counts in ``missed``.

**Growing runs** (``schedule add --grow``): every fire runs the spec under the
schedule's own name, one run, so a fire computes only what the run lacks: the
checkpoints a training run saved since the last fire (a spec whose generator is a
checkpoint series, :mod:`cluster.series`), or nothing, answered from the store.
The submission id stays per fire.

Missed fire times (the daemon was down across several): the latest one is
submitted once, the older ones are counted in ``missed`` and not run.

**Who decides what a fire runs.** The ``_schedules`` attributes live in a store
that others may write (a shared bucket), so nothing read from there decides what
code runs or where (ARCHITECTURE.md, "Trust"). The person who fires (``run-due``,
``daemon``) names the job server, the head's interpreter and the S3 endpoint
(:class:`Firer`); a schedule whose stored values differ is refused, not
redirected. Its stored spec passes the same gate as ``resume`` and ``report``
(:func:`cluster.trust.gate_stored_spec`: an import path runs only with the
firer's ``--allow-import``) and is validated again. A refused schedule is
reported in one line on stderr and in its record; the others fire.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import yaml
import zarr

from geometry_core.errors import GangeoError, clip
from jobs.output import dumps_json, print_json

__all__ = [
    "Firer",
    "OVERLAP",
    "RayJobs",
    "ScheduleBook",
    "ScheduleError",
    "add_parser",
    "check_schedule_args",
    "daemon",
    "fire_entry",
    "fire_run_name",
    "next_fire",
    "submission_id",
    "submit_entry",
    "trusted_entry",
]

STATE_GROUP = "_schedules"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_MAX_MISSED_COUNT = 10_000
OVERLAP = ("skip", "queue")
_ACTIVE = ("PENDING", "RUNNING")  # a Ray job in these states is still the previous fire
# Daemon checks: at least once a second (0 would spin), at most once a day.
INTERVAL_RANGE = (1.0, 86_400.0)
# --now: far enough from datetime's limits that croniter's steps and the fire's name never overflow.
NOW_RANGE = (datetime(1970, 1, 1, tzinfo=timezone.utc), datetime(9000, 1, 1, tzinfo=timezone.utc))
log = logging.getLogger("gangeo.schedule")


class ScheduleError(GangeoError, ValueError):
    """A bad schedule or a schedule that does not exist (one line)."""

    kind = "schedule"


def _utc(t: datetime) -> datetime:
    """Naive times are taken as UTC; everything is compared in UTC."""
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _iso(t: datetime) -> str:
    return _utc(t).isoformat(timespec="seconds")


def fire_run_name(name: str, fire: datetime) -> str:
    """The run a schedule's fire writes, e.g. ``nightly-20261126T0300Z``; also its Ray submission id."""
    return f"{name}-{_utc(fire):%Y%m%dT%H%M}Z"


def submission_id(name: str, fire: datetime) -> str:
    """The Ray submission id of a schedule's fire time: the same on every retry (the fire's run name)."""
    return fire_run_name(name, fire)


@dataclass(frozen=True)
class Firer:
    """What the person who fires decides, never the store: job server, head interpreter, S3 endpoint, imports."""

    address: str
    python: str | None = None
    s3_endpoint: str | None = None
    allow_import: bool = False


def _same_server(a: object, b: object) -> bool:
    return isinstance(a, str) and isinstance(b, str) and a.rstrip("/") == b.rstrip("/")


def trusted_entry(entry: dict, firer: Firer, *, run: str) -> dict:
    """The entry a fire submits: job server, interpreter and endpoint the firer's; the spec gated and validated.

    Raises :class:`ScheduleError` (one line) when the stored entry names another job
    server, interpreter or S3 endpoint than the firer, names code to import without
    the firer's ``allow_import``, or holds a spec that no longer validates.
    """
    from cluster.spec import SpecError, parse_spec
    from cluster.trust import ImportNotAllowedError, gate_stored_spec

    what = f"schedule fire {run!r}"
    if not _same_server(entry.get("address"), firer.address):
        raise ScheduleError(f"{what}: recorded for job server {clip(entry.get('address'))}, not {clip(firer.address)} "
                            "that this command submits to; not fired")
    for field, mine in (("python", firer.python), ("s3_endpoint", firer.s3_endpoint)):
        if entry.get(field) != mine:
            flag = "--" + field.replace("_", "-")
            raise ScheduleError(f"{what}: recorded with {field} {clip(entry.get(field))}, this command has "
                                f"{clip(mine)} ({flag}); not fired")
    try:
        spec = gate_stored_spec(entry.get("spec"), run=run, allow_import=firer.allow_import)
        parse_spec(spec)
    except ImportNotAllowedError as exc:
        raise ScheduleError(f"{exc}; not fired") from None
    except SpecError as exc:
        raise ScheduleError(f"{what}: its stored spec is not valid: {str(exc).splitlines()[0]}; not fired") from None
    return {**entry, "spec": spec, "address": firer.address, "python": firer.python,
            "s3_endpoint": firer.s3_endpoint}


def fire_entry(entry: dict, name: str, fire: datetime) -> dict:
    """The schedule entry of one fire: its spec renamed to the fire's run (the schedule's name when it grows)."""
    run = name if entry.get("grow") is True else fire_run_name(name, fire)
    return {**entry, "spec": {**entry["spec"], "name": run}, "run": run}


def next_fire(entry: dict, now: datetime) -> datetime:
    """The schedule's first fire time after ``now``; :class:`ScheduleError` when it has none."""
    from croniter import croniter

    try:
        return _utc(croniter(entry["cron"], _utc(now)).get_next(datetime))
    except Exception as exc:  # croniter's errors for dates that never occur, overflows, bad strings
        raise ScheduleError(f"cron {clip(entry.get('cron'))} has no fire time after {_iso(now)}: "
                            f"{clip(str(exc), bare=True)}") from None


class ScheduleBook:
    """The schedules of one results store, kept in its ``_schedules`` group attributes."""

    def __init__(self, root: zarr.Group) -> None:
        self._group = root.require_group(STATE_GROUP)

    def _read(self) -> dict:
        return dict(self._group.attrs.get("schedules", {}))

    def _write(self, entries: dict) -> None:
        self._group.attrs["schedules"] = entries

    def add(self, name: str, cron: str, spec: dict, address: str, *, store: str | None,
            now: datetime, s3_endpoint: str | None = None, overlap: str = "skip",
            python: str | None = None, replace: bool = False, grow: bool = False) -> dict:
        """Add a schedule (an existing name only with ``replace``); its first fire is the first after ``now``.

        ``grow``: every fire runs the one run named ``name`` (it grows), not a run per fire.
        """
        check_schedule_args(name, cron)
        if overlap not in OVERLAP:
            raise ScheduleError(f"--overlap: expected one of {', '.join(OVERLAP)}, got {clip(overlap)}")
        entries = self._read()
        if name in entries and not replace:
            old = entries[name]
            raise ScheduleError(f"schedule {name!r} exists (cron {old.get('cron')!r}, since {old.get('since')}); "
                                "use --replace to replace it, or choose another name")
        entries[name] = {"cron": cron, "spec": spec, "address": address, "store": store,
                         "s3_endpoint": s3_endpoint, "overlap": overlap, "python": python, "since": _iso(now),
                         "last_fire": None, "last_job": None, "last_run": None, "queued": None,
                         "missed": 0, "skipped": 0, **({"grow": True} if grow else {})}
        self._write(entries)
        return entries[name]

    def remove(self, name: str) -> None:
        entries = self._read()
        if name not in entries:
            raise ScheduleError(f"no schedule {name!r}; schedules: {sorted(entries)}")
        del entries[name]
        self._write(entries)

    def list(self, now: datetime | None = None) -> dict:
        """All schedules by name; given ``now``, each with its ``next_fire`` time after it."""
        entries = self._read()
        if now is not None:
            entries = {k: {**e, **self._next(e, now)} for k, e in entries.items()}
        return entries

    @staticmethod
    def _next(entry: dict, now: datetime) -> dict:
        """``next_fire``, or ``null`` and the error of a schedule that can never fire (the others still list)."""
        try:
            return {"next_fire": _iso(next_fire(entry, now))}
        except ScheduleError as exc:
            return {"next_fire": None, "error": str(exc)}

    @staticmethod
    def due(entry: dict, now: datetime) -> tuple[datetime | None, int]:
        """The latest fire time in (last fire or since, now], and how many earlier ones it supersedes."""
        from croniter import croniter

        start = _utc(datetime.fromisoformat(entry["last_fire"] or entry["since"]))
        now = _utc(now)
        prev = croniter(entry["cron"], now).get_prev(datetime)
        nxt = croniter(entry["cron"], prev).get_next(datetime)
        latest = nxt if nxt <= now else prev  # get_prev excludes a fire time equal to now
        if latest <= start:
            return None, 0
        # Count the superseded ones, bounded: after a long outage the count saturates.
        it, missed = croniter(entry["cron"], start), 0
        while missed < _MAX_MISSED_COUNT and it.get_next(datetime) < latest:
            missed += 1
        return latest, missed

    def run_due(self, now: datetime, jobs) -> list[dict]:
        """Fire every schedule due at ``now`` once; return one record per schedule that fired.

        ``jobs``: :class:`RayJobs` or a stand-in with ``submit(entry, submission_id) -> job id``
        (idempotent for a resubmitted id) and ``running(entry, job_id) -> bool``. If
        either raises, nothing is recorded and the fire is retried at the next call.
        """
        fired = []
        for name, entry in sorted(self._read().items()):
            try:
                fire, missed = self.due(entry, now)
            except Exception as exc:  # a stored entry that can never fire: reported, the others go on
                fired.append({"name": name, "fire": None, "error": f"schedule {name!r}: {clip(str(exc), bare=True)}"})
                continue
            if fire is None and not entry.get("queued"):
                continue
            try:
                rec = self._fire(name, entry, fire, missed, jobs)
            except Exception as exc:  # keep the other schedules going; this one retries later
                when = fire or datetime.fromisoformat(entry["queued"])
                rec = {"name": name, "fire": _iso(when), "submission_id": submission_id(name, when),
                       "error": str(exc) or repr(exc)}
            if rec is not None:
                fired.append(rec)
        return fired

    def _fire(self, name: str, entry: dict, fire: datetime | None, missed: int, jobs) -> dict | None:
        last = entry.get("last_job")
        if last is not None and jobs.running(entry, last):
            return self._overlap(name, entry, fire, missed, last) if fire is not None else None
        queued = entry.get("queued")
        when = datetime.fromisoformat(queued) if queued else fire
        sid = submission_id(name, when)
        fired = fire_entry(entry, name, when)
        job = jobs.submit(fired, sid)
        updates = {"last_job": job, "last_run": fired["run"], "queued": None}
        if fire is not None:
            updates["last_fire"], updates["missed"] = _iso(fire), int(entry.get("missed", 0)) + missed
            if queued:  # the queued fire went first; this one waits for it
                updates["queued"] = _iso(fire)
        self._update(name, updates)
        return {"name": name, "fire": _iso(when), "run": fired["run"], "submission_id": sid,
                "job_id": job, "missed": missed if fire is not None else 0}

    def _overlap(self, name: str, entry: dict, fire: datetime, missed: int, last: str) -> dict:
        """A fire due while the previous fire's job ``last`` still runs: skip or queue it."""
        updates = {"last_fire": _iso(fire), "missed": int(entry.get("missed", 0)) + missed}
        if entry.get("overlap", "skip") == "queue":
            if entry.get("queued"):  # at most one waits: the replaced one is missed
                updates["missed"] += 1
            updates["queued"] = _iso(fire)
            what = f"queued: runs when the previous fire's job {last} ends (--overlap queue)"
        else:
            updates["skipped"] = int(entry.get("skipped", 0)) + 1
            what = f"skipped: the previous fire's job {last} still runs (--overlap skip)"
        self._update(name, updates)
        log.warning("gangeo schedule: %s: fire %s %s", name, _iso(fire), what)
        outcome = "queued" if "queued" in updates else "skipped"
        return {"name": name, "fire": _iso(fire), "run": None, "missed": missed, outcome: True, "reason": what}

    def _update(self, name: str, updates: dict) -> None:
        # Re-read: another schedule's record may have been written meanwhile.
        entries = self._read()
        if name in entries:
            entries[name].update(updates)
            self._write(entries)


class RayJobs:
    """A schedule's fires as Ray jobs at the firer's job server (``client``: a stand-in for tests).

    Every entry passes :func:`trusted_entry` before it is submitted: the store names
    neither the server, nor the interpreter, nor code to import.
    """

    def __init__(self, firer: Firer, client=None) -> None:
        if not isinstance(firer, Firer):
            raise TypeError("RayJobs needs a Firer: the job server comes from the person who fires")
        self.firer, self.client = firer, client

    def submit(self, entry: dict, sid: str) -> str:
        return submit_entry(trusted_entry(entry, self.firer, run=sid), sid, client=self.client)

    def running(self, entry: dict, job_id: str) -> bool:
        """True while the job is pending or running; a job the server does not know is not running."""
        from jobs.submit import job_status

        try:
            return job_status(job_id, self.firer.address, client=self.client)["status"] in _ACTIVE
        except GangeoError as exc:
            if "does not exist" in str(exc) or "404" in str(exc):
                return False
            raise


def submit_entry(entry: dict, sid: str, *, client=None) -> str:
    """Submit a fire's entry (see :func:`fire_entry`) as a Ray job with submission id ``sid``.

    A resubmission of the same id and spec reports the existing job (``jobs.submit.submit_job``).
    """
    from jobs.submit import submit_job

    with tempfile.TemporaryDirectory(prefix="gangeo-sched-") as tmp:
        path = Path(tmp, "spec.yaml")
        path.write_text(yaml.safe_dump(entry["spec"], sort_keys=False))
        return submit_job(path, entry["address"], store=entry.get("store"), s3_endpoint=entry.get("s3_endpoint"),
                          submission_id=sid, python=entry.get("python"), client=client)["job_id"]


def daemon(book: ScheduleBook, jobs, *, interval: float = 60.0,
           clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
           sleep: Callable[[float], None] = time.sleep, iterations: int | None = None,
           out=sys.stdout) -> None:
    """Call ``run_due`` every ``interval`` seconds (forever, or ``iterations`` times), one JSON line per fire."""
    check_interval(interval)
    k = 0
    while iterations is None or k < iterations:
        for rec in book.run_due(clock(), jobs):
            out.write(dumps_json(rec, indent=None) + "\n")
            out.flush()
            say_error(rec)
        k += 1
        if iterations is None or k < iterations:
            sleep(interval)


# name, lowest, highest, names allowed in place of numbers
_CRON_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
                ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                  "dec")),
                ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")))
_CRON_ITEM = re.compile(r"^(?:\*|([^-/]+)(?:-([^-/]+))?)(?:/(.*))?\Z")


def say_error(rec: dict) -> None:
    """One line on stderr for a fire that was refused or failed (its record also says so)."""
    if "error" in rec:
        text = " ".join(str(rec["error"]).split())
        print(f"gangeo schedule: {rec['name']}: {clip(text, 400, bare=True)}", file=sys.stderr, flush=True)


def check_interval(interval: float) -> float:
    """The daemon's interval in seconds, within :data:`INTERVAL_RANGE` (finite: 0 would spin, inf never wake)."""
    low, high = INTERVAL_RANGE
    if not isinstance(interval, (int, float)) or not math.isfinite(interval) or not low <= interval <= high:
        raise ScheduleError(f"--interval: expected seconds from {low:g} to {high:g}, got {clip(interval)}")
    return float(interval)


def check_schedule_args(name: str, cron: str) -> None:
    """Refuse a bad schedule name or cron expression, naming the field, the value and the allowed range."""
    from croniter import croniter

    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ScheduleError(f"schedule name: expected letters, digits, '.', '_' or '-', got {clip(name)}")
    fields = cron.split() if isinstance(cron, str) else []
    if len(fields) != len(_CRON_FIELDS):
        raise ScheduleError(f"--cron: expected 5 fields (minute hour day-of-month month day-of-week), "
                            f"got {len(fields)}: {clip(cron)}")
    for i, field in enumerate(fields):
        problem = _field_problem(field, *_CRON_FIELDS[i][1:])
        # Each field alone, the others '*': what croniter refuses beyond numbers and ranges.
        if problem is None and not croniter.is_valid(" ".join(field if j == i else "*" for j in range(5))):
            problem = f"{clip(field)} is not valid"
        if problem is not None:
            what, low, high, _ = _CRON_FIELDS[i]
            raise ScheduleError(f"--cron: field {i + 1}, {what}, {problem}; allowed {low}-{high} "
                                f"(in {clip(cron)})")
    if not croniter.is_valid(cron):
        raise ScheduleError(f"--cron: expected a 5-field cron expression, got {clip(cron)}")
    # Valid fields can still name a date that never occurs (30 February): a schedule must be able to fire.
    next_fire({"cron": cron}, datetime(2001, 1, 1, tzinfo=timezone.utc))


def _field_problem(field: str, low: int, high: int, names: tuple) -> str | None:
    """What is wrong with one cron field's numbers (values, ranges, steps), or None."""
    for item in field.split(","):
        m = _CRON_ITEM.match(item)
        if m is None:
            return f"{clip(item)} is not a value, a range or a step"
        for value in (m.group(1), m.group(2)):
            if value is None or value.lower() in names or value in ("L", "?") or not value.isdigit():
                continue  # names and croniter's extensions are left to croniter
            if not low <= int(value) <= high:
                return f"got {value}"
        step = m.group(3)
        if step is not None and (not step.isdigit() or not 1 <= int(step) <= high):
            return f"step {clip(step, bare=True)} is not a whole number from 1 to {high}"
    return None


def _book(args: argparse.Namespace) -> ScheduleBook:
    from cluster.storage import open_root

    return ScheduleBook(open_root(args.store, s3_endpoint=args.s3_endpoint, mode="a"))


def _now(args: argparse.Namespace) -> datetime:
    if getattr(args, "now", None):
        try:
            now = _utc(datetime.fromisoformat(args.now))
        except (ValueError, OverflowError):
            raise ScheduleError(f"--now: expected an ISO time like 2026-01-01T02:00, got {clip(args.now)}") from None
        low, high = NOW_RANGE
        if not low <= now < high:
            raise ScheduleError(f"--now: expected a time from {low.year} to before {high.year}, got {clip(args.now)}")
        return now
    return datetime.now(timezone.utc)


def _firer(args: argparse.Namespace) -> Firer:
    return Firer(address=args.address, python=args.python, s3_endpoint=args.s3_endpoint,
                 allow_import=bool(args.allow_import))


def _cmd(args: argparse.Namespace) -> int:
    from cluster.spec import load_spec

    if args.action == "add":
        check_schedule_args(args.name, args.cron)  # before the store is opened: a refusal writes nothing
        spec = load_spec(args.spec).to_dict()
        # No --store: the jobs write to the spec's own store (the schedules live in the default one).
        out = _book(args).add(args.name, args.cron, spec, args.address, store=args.store, now=_now(args),
                              s3_endpoint=args.s3_endpoint, overlap=args.overlap, python=args.python,
                              replace=args.replace, grow=args.grow)
    elif args.action == "list":
        out = _book(args).list(now=_now(args))
    elif args.action == "remove":
        _book(args).remove(args.name)
        out = {"removed": args.name}
    elif args.action == "run-due":
        out = _book(args).run_due(_now(args), RayJobs(_firer(args)))
        for rec in out:
            say_error(rec)
        print_json(out)
        return 1 if any("error" in rec for rec in out) else 0  # some schedule did not fire: a partial result
    else:
        check_interval(args.interval)
        daemon(_book(args), RayJobs(_firer(args)), interval=args.interval)
        return 0
    print_json(out)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``schedule add|list|remove|run-due|daemon``."""
    from cluster.storage import DEFAULT_STORE
    from jobs.submit import JOB_SERVER_HELP

    p = subparsers.add_parser("schedule", help="recurring sweeps (cron, UTC) submitted as Ray jobs, "
                                               "one run per fire")
    acts = p.add_subparsers(dest="action", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        # Default None, not DEFAULT_STORE: `add` records an explicit --store as the jobs' store,
        # while the schedules themselves then live in the default store.
        sp.add_argument("--store", default=None,
                        help=f"store holding the schedules, and the jobs' store (default {DEFAULT_STORE}; "
                             "jobs then use their spec's store)")
        sp.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (else AWS_ENDPOINT_URL)")
        sp.set_defaults(func=_cmd)

    a = acts.add_parser("add", help="add a schedule (an existing name only with --replace)")
    a.add_argument("name", help="schedule name; each fire writes the run NAME-<fire time>, e.g. NAME-20261126T0300Z")
    a.add_argument("--cron", required=True, help='cron expression in UTC, e.g. "*/15 * * * *"')
    a.add_argument("--spec", required=True, help="sweep spec (YAML), validated and stored")
    a.add_argument("--address", required=True, metavar="JOB_SERVER", help=JOB_SERVER_HELP)
    a.add_argument("--overlap", choices=OVERLAP, default="skip",
                   help="a fire due while the previous fire's job still runs: skip it (logged) or queue it "
                        "until that job ends (default skip)")
    a.add_argument("--python", default=None, metavar="PATH",
                   help="interpreter on the head for the jobs (default: the daemon's, sys.executable)")
    a.add_argument("--replace", action="store_true", help="replace a schedule of the same name")
    a.add_argument("--grow", action="store_true",
                   help="every fire runs the one run NAME, which grows (a checkpoint series: the checkpoints "
                        "saved since the last fire), instead of a run per fire")
    a.add_argument("--now", default=None, help=argparse.SUPPRESS)
    common(a)
    ls = acts.add_parser("list", help="schedules as JSON, each with its next fire time")
    ls.add_argument("--now", default=None, help=argparse.SUPPRESS)
    common(ls)
    r = acts.add_parser("remove", help="delete a schedule")
    r.add_argument("name")
    common(r)
    def firing(sp: argparse.ArgumentParser) -> None:
        # The store never decides where a fire goes or what it runs (module docstring).
        sp.add_argument("--address", required=True, metavar="JOB_SERVER",
                        help="job server to submit to; a schedule recorded for another one is refused")
        sp.add_argument("--python", default=None, metavar="PATH",
                        help="interpreter on the head, as given to `schedule add --python` (default: none given, "
                             "the firing interpreter)")
        sp.add_argument("--allow-import", action="store_true",
                        help="let stored specs that name code to import (arch=) run it")

    d = acts.add_parser("run-due", help="submit every due schedule once (exit 1 if one was refused or failed)")
    d.add_argument("--now", default=None, help="ISO time to use as now (UTC)")
    firing(d)
    common(d)
    m = acts.add_parser("daemon", help="run-due every --interval seconds, forever")
    m.add_argument("--interval", type=float, default=60.0,
                   help=f"seconds between checks, {INTERVAL_RANGE[0]:g} to {INTERVAL_RANGE[1]:g} (default 60)")
    firing(m)
    common(m)
