"""`gangeo schedule`: recurring sweeps from cron expressions, submitted as Ray jobs.

Example::

    gangeo schedule add nightly --cron "0 2 * * *" --spec jobs/examples/quickstart.yaml \\
        --address http://head:8265 --store s3://bucket/runs
    gangeo schedule list --store s3://bucket/runs
    gangeo schedule run-due --store s3://bucket/runs        # from an outside cron, or:
    gangeo schedule daemon --store s3://bucket/runs         # run-due every minute

State lives in the results store (attributes of the ``_schedules`` group): per
schedule its cron expression (UTC), the validated spec, the Ray address and the
last fire time. A fire time ``T`` is submitted with the deterministic
submission id ``f"{name}-{T:%Y%m%dT%H%M}"`` and recorded after Ray accepts it;
a crash in between resubmits the same id on restart, which Ray refuses as a
duplicate and which is then recorded, so a restart neither repeats nor skips a
due run. A failed submission is not recorded and is retried at the next check.

Missed fire times (the daemon was down across several): the latest one is
submitted once, the older ones are counted in ``missed`` and not run; a sweep
of the same spec resumes rather than recomputes, so catching up on all of them
would only repeat the newest.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import yaml
import zarr

from geometry_core.errors import GangeoError, clip
from jobs.output import print_json

__all__ = [
    "ScheduleBook",
    "ScheduleError",
    "add_parser",
    "daemon",
    "submission_id",
    "submit_entry",
]

STATE_GROUP = "_schedules"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MAX_MISSED_COUNT = 10_000


class ScheduleError(GangeoError, ValueError):
    """A bad schedule or a schedule that does not exist (one line)."""

    kind = "schedule"


def _utc(t: datetime) -> datetime:
    """Naive times are taken as UTC; everything is compared in UTC."""
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _iso(t: datetime) -> str:
    return _utc(t).isoformat(timespec="seconds")


def submission_id(name: str, fire: datetime) -> str:
    """The Ray submission id of a schedule's fire time: the same on every retry."""
    return f"{name}-{_utc(fire):%Y%m%dT%H%M}"


class ScheduleBook:
    """The schedules of one results store, kept in its ``_schedules`` group attributes."""

    def __init__(self, root: zarr.Group) -> None:
        self._group = root.require_group(STATE_GROUP)

    def _read(self) -> dict:
        return dict(self._group.attrs.get("schedules", {}))

    def _write(self, entries: dict) -> None:
        self._group.attrs["schedules"] = entries

    def add(self, name: str, cron: str, spec: dict, address: str, *, store: str | None,
            now: datetime, s3_endpoint: str | None = None) -> dict:
        """Add (or replace) a schedule; its first fire time is the first after ``now``."""
        from croniter import croniter

        check_schedule_args(name, cron)
        entries = self._read()
        entries[name] = {"cron": cron, "spec": spec, "address": address, "store": store,
                         "s3_endpoint": s3_endpoint, "since": _iso(now), "last_fire": None, "last_job": None, "missed": 0}
        self._write(entries)
        return entries[name]

    def remove(self, name: str) -> None:
        entries = self._read()
        if name not in entries:
            raise ScheduleError(f"no schedule {name!r}; schedules: {sorted(entries)}")
        del entries[name]
        self._write(entries)

    def list(self) -> dict:
        """All schedules by name."""
        return self._read()

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

    def run_due(self, now: datetime, submit: Callable[[dict, str], str]) -> list[dict]:
        """Submit every schedule due at ``now`` once; return one record per schedule fired.

        ``submit(entry, submission_id) -> job id`` must treat Ray's duplicate
        refusal as success (see :func:`submit_entry`); if it raises, the fire time
        is not recorded and is retried at the next call.
        """
        fired = []
        for name, entry in sorted(self._read().items()):
            fire, missed = self.due(entry, now)
            if fire is None:
                continue
            sid = submission_id(name, fire)
            try:
                job = submit(entry, sid)
            except Exception as exc:  # keep the other schedules going; this one retries later
                fired.append({"name": name, "fire": _iso(fire), "submission_id": sid, "error": str(exc)})
                continue
            # Re-read: another schedule's record may have been written meanwhile.
            entries = self._read()
            if name in entries:
                entries[name].update(last_fire=_iso(fire), last_job=job,
                                     missed=int(entries[name].get("missed", 0)) + missed)
                self._write(entries)
            fired.append({"name": name, "fire": _iso(fire), "submission_id": sid, "job_id": job,
                          "missed": missed})
        return fired


def submit_entry(entry: dict, sid: str) -> str:
    """Submit a schedule's spec as a Ray job with submission id ``sid``; a duplicate counts as done."""
    from jobs.submit import SubmitError, submit_spec

    with tempfile.TemporaryDirectory(prefix="gangeo-sched-") as tmp:
        path = Path(tmp, "spec.yaml")
        path.write_text(yaml.safe_dump(entry["spec"], sort_keys=False))
        try:
            return submit_spec(path, entry["address"], store=entry.get("store"),
                               s3_endpoint=entry.get("s3_endpoint"), submission_id=sid)
        except SubmitError as exc:
            if "already exists" in str(exc):
                return sid
            raise


def daemon(book: ScheduleBook, submit: Callable[[dict, str], str], *, interval: float = 60.0,
           clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
           sleep: Callable[[float], None] = time.sleep, iterations: int | None = None,
           out=sys.stdout) -> None:
    """Call ``run_due`` every ``interval`` seconds (forever, or ``iterations`` times), one JSON line per fire."""
    k = 0
    while iterations is None or k < iterations:
        for rec in book.run_due(clock(), submit):
            out.write(json.dumps(rec) + "\n")
            out.flush()
        k += 1
        if iterations is None or k < iterations:
            sleep(interval)


_CRON_FIELDS = ("minute (0-59)", "hour (0-23)", "day of month (1-31)", "month (1-12)", "day of week (0-7)")


def check_schedule_args(name: str, cron: str) -> None:
    """Refuse a bad schedule name or cron expression, naming the cron field that is wrong."""
    from croniter import croniter

    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ScheduleError(f"schedule name: expected letters, digits, '.', '_' or '-', got {clip(name)}")
    fields = cron.split() if isinstance(cron, str) else []
    if len(fields) != len(_CRON_FIELDS):
        raise ScheduleError(f"--cron: expected 5 fields (minute hour day month weekday), got {clip(cron)}")
    for i, what in enumerate(_CRON_FIELDS):  # each field alone, the others '*'
        if not croniter.is_valid(" ".join(fields[i] if j == i else "*" for j in range(len(fields)))):
            raise ScheduleError(f"--cron: field {i + 1}, {what}, is not valid: {clip(fields[i])} in {clip(cron)}")
    if not croniter.is_valid(cron):
        raise ScheduleError(f"--cron: expected a 5-field cron expression, got {clip(cron)}")


def _book(args: argparse.Namespace) -> ScheduleBook:
    from cluster.storage import open_root

    return ScheduleBook(open_root(args.store, s3_endpoint=args.s3_endpoint, mode="a"))


def _now(args: argparse.Namespace) -> datetime:
    if getattr(args, "now", None):
        try:
            return _utc(datetime.fromisoformat(args.now))
        except ValueError:
            raise ScheduleError(f"--now: expected an ISO time like 2026-01-01T02:00, got {args.now!r}") from None
    return datetime.now(timezone.utc)


def _cmd(args: argparse.Namespace) -> int:
    from cluster.spec import load_spec

    if args.action == "add":
        check_schedule_args(args.name, args.cron)  # before the store is opened: a refusal writes nothing
        spec = load_spec(args.spec).to_dict()
        # No --store: the jobs write to the spec's own store (the schedules live in the default one).
        out = _book(args).add(args.name, args.cron, spec, args.address, store=args.store, now=_now(args),
                              s3_endpoint=args.s3_endpoint)
    elif args.action == "list":
        out = _book(args).list()
    elif args.action == "remove":
        _book(args).remove(args.name)
        out = {"removed": args.name}
    elif args.action == "run-due":
        out = _book(args).run_due(_now(args), submit_entry)
    else:
        daemon(_book(args), submit_entry, interval=args.interval)
        return 0
    print_json(out)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``schedule add|list|remove|run-due|daemon``."""
    from cluster.storage import DEFAULT_STORE

    p = subparsers.add_parser("schedule", help="recurring sweeps (cron, UTC) submitted as Ray jobs")
    acts = p.add_subparsers(dest="action", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        # Default None, not DEFAULT_STORE: `add` records an explicit --store as the jobs' store,
        # while the schedules themselves then live in the default store.
        sp.add_argument("--store", default=None,
                        help=f"store holding the schedules, and the jobs' store (default {DEFAULT_STORE}; "
                             "jobs then use their spec's store)")
        sp.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (else AWS_ENDPOINT_URL)")
        sp.set_defaults(func=_cmd)

    a = acts.add_parser("add", help="add or replace a schedule")
    a.add_argument("name")
    a.add_argument("--cron", required=True, help='cron expression in UTC, e.g. "*/15 * * * *"')
    a.add_argument("--spec", required=True, help="sweep spec (YAML), validated and stored")
    a.add_argument("--address", required=True, help="Ray job server, e.g. http://HEAD:8265")
    a.add_argument("--now", default=None, help=argparse.SUPPRESS)
    common(a)
    common(acts.add_parser("list", help="schedules as JSON"))
    r = acts.add_parser("remove", help="delete a schedule")
    r.add_argument("name")
    common(r)
    d = acts.add_parser("run-due", help="submit every due schedule once")
    d.add_argument("--now", default=None, help="ISO time to use as now (UTC)")
    common(d)
    m = acts.add_parser("daemon", help="run-due every --interval seconds, forever")
    m.add_argument("--interval", type=float, default=60.0)
    common(m)
