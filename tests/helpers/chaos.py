"""A chaos soak: a seeded, bounded, randomised fault schedule over a real SQS fleet.

The fleet is real ``odc-ndvi run --from-sqs`` child processes (local dask, one thread, one
task at a time, each seasonal reduction slowed by ``task_delay`` seconds so that signals
land mid-task) on moto SQS, reading their inputs from and writing their outputs to moto S3
*through* the fault gate (:class:`tests.fixtures.s3gate.S3Gate`: GDAL's ``/vsis3/`` and
boto3's S3 client both point at it; SQS goes to moto directly). The world is a tiny
synthetic USGS C2 archive uploaded to S3 and indexed at its ``s3://`` URLs, with one scene's
mask band truncated: the tasks that read it are *poisoned* and must end in the dead-letter
queue; every other task is *healthy*.

One :func:`soak` run:

1. a clean run (``odc-ndvi run`` of the task db, no fault) writes the reference outputs;
2. the tasks are published to a queue with a redrive policy; ``runners - 1`` runners start,
   one more starts late; a seeded schedule (:class:`Schedule`) then injects ``faults``
   faults at random moments: SIGKILL or SIGTERM of a runner that is computing (a killed
   runner is replaced, as a Kubernetes Deployment does, while the queue holds work),
   HTTP 503 answers and dropped connections on S3 reads (GET/HEAD) and on writes
   (PUT/POST/DELETE) of inputs, staged files, final files and STAC items;
3. when the queue is drained and every runner has exited, the documented sweep
   (``odc-ndvi sweep-staging LOCATION --older-than <lease>``, once the lease has passed)
   removes what killed runners staged;
4. the invariants are checked (:meth:`SoakResult.problems`): every healthy task committed
   exactly once (one STAC item PUT that reached S3, seen by the gate) with outputs
   bit-identical to the clean run; every poisoned task in the dead-letter queue and
   nowhere else; no object under a final name that a STAC item does not list; no staged
   object left after the sweep; the queue empty; the fake AWS secret in no log.

Seeded: the schedule's decisions (kinds, moments, targets) come from ``random.Random(seed)``;
what each decision meets depends on timing, which is the point of a soak. Bounded: at most
``faults`` faults (those still scheduled when the fleet has drained the queue are dropped),
at most ``kill_cap`` kills of runners computing the same task (SQS counts every receive
towards the redrive limit, so a task whose holder dies ``max_receive_count``
times is dead-lettered *by design*: that is the redrive policy, not a loss).

Used by ``tests/test_chaos.py`` (a short soak in the suite) and ``benchmarks/soak.py``
(hundreds of faults, a table).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures.s3gate import S3Gate
from tests.fixtures.servers import MotoServer, _tail
from tests.helpers.fleet import (
    SLOW_RUNNER,
    poisoned_archive,
    queued_tasks,
    seasonal_tasks,
    task_message,
)
from tests.helpers.lines import child_env

__all__ = [
    "FAULT_KINDS",
    "ChaosWorld",
    "Schedule",
    "SoakResult",
    "clean_outputs",
    "copy_logs",
    "make_world",
    "soak",
    "world_environ",
]

REPO = Path(__file__).resolve().parents[2]
SEASONAL_RUN = REPO / "cfg" / "run-usgs-c2-seasonal.yaml"
SEASONAL_TASKS = REPO / "cfg" / "save-tasks-usgs-c2-seasonal.yaml"

#: every kind of fault the schedule injects
FAULT_KINDS = (
    "sigkill",
    "sigkill-writing",
    "sigterm",
    "late-runner",
    "s3-read-503",
    "s3-read-drop",
    "s3-write-503",
    "s3-write-drop",
)
#: relative weights of the kinds the schedule draws (the late runner is one, at its time)
_WEIGHTS = {
    "sigkill": 2,
    "sigkill-writing": 1,
    "sigterm": 2,
    "s3-read-503": 3,
    "s3-read-drop": 3,
    "s3-write-503": 3,
    "s3-write-drop": 3,
}
_READ, _WRITE = ("GET", "HEAD"), ("PUT", "POST", "DELETE")
_SUBMITTED = re.compile(r"Submitting (\S+) \(")
_ENDED = re.compile(r"(?:Finished (\S+)$|Task (\S+) failed|Skipped (\S+) )")


# ------------------------------------------------------------------------------ the world


@dataclass(frozen=True)
class ChaosWorld:
    """A tiny archive on S3, indexed at its ``s3://`` URLs, and its seasonal task db."""

    root: Path
    #: datacube environment variables (the embedded PostgreSQL index)
    dc_environ: dict[str, str]
    #: bucket holding the inputs (``archive/...``) and every run's outputs
    bucket: str
    db: Path
    #: task locations (``x+768/y-2113/2020-03--P3M``) -> dataset ids
    tasks: dict[str, frozenset[str]]
    #: tasks that read the truncated scene
    poisoned: frozenset[str]
    #: S3 keys of the input files (band files), for read faults
    input_keys: tuple[str, ...]

    @property
    def healthy(self) -> frozenset[str]:
        return frozenset(self.tasks) - self.poisoned


def make_world(root: Path, dc_env: Any, moto: MotoServer, *, tiles: int = 2) -> ChaosWorld:
    """Generate a tiny USGS C2 archive of ``tiles`` x 1 tiles under ``root``, truncate one
    April scene's mask band, upload it to a fresh moto bucket, index every dataset at its
    ``s3://`` URL into ``dc_env`` (a :class:`~odc_ndvi_plugin.dev.index.DatacubeEnv`) and
    save the seasonal tasks (``tiles`` x 4)."""
    from datacube.index.hl import Doc2Dataset

    from odc_ndvi_plugin.dev.index import add_products
    from odc_ndvi_plugin.dev.synthetic import ArchiveSpec

    spec = ArchiveSpec.tiny(tiles=(tiles, 1))
    archive, victim_id = poisoned_archive(spec, root / "archive")
    bucket = f"chaos-{uuid.uuid4().hex[:10]}"
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=bucket)
    input_keys = []
    for path in sorted(p for p in archive.root.rglob("*") if p.is_file()):
        key = "archive/" + path.relative_to(archive.root).as_posix()
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        if path.suffix.upper() == ".TIF":
            input_keys.append(key)
    add_products(dc_env, [archive.product_definition])
    with dc_env.index() as index:
        resolve = Doc2Dataset(index, skip_lineage=True)
        for path in archive.dataset_paths:
            uri = f"s3://{bucket}/archive/" + path.relative_to(archive.root).as_posix()
            dataset, err = resolve(yaml.safe_load(path.read_text()), uri)
            if dataset is None:
                raise RuntimeError(f"cannot index {uri}: {err}")
            index.datasets.add(dataset)
    db, tasks = seasonal_tasks(
        dc_env.environ(), spec, SEASONAL_TASKS, root / "tasks" / "seasonal.db"
    )
    poisoned = frozenset(loc for loc, ids in tasks.items() if victim_id in ids)
    if not 0 < len(poisoned) < len(tasks):
        raise RuntimeError(f"the truncated scene is in {len(poisoned)} of {len(tasks)} tasks")
    return ChaosWorld(
        root=root,
        dc_environ=dict(dc_env.environ()),
        bucket=bucket,
        db=db,
        tasks=tasks,
        poisoned=poisoned,
        input_keys=tuple(input_keys),
    )


def world_environ(world: ChaosWorld, moto: MotoServer, gate: S3Gate, **extra: str) -> dict:
    """A child's environment for the world: its index, moto's credentials and region, S3
    (boto3 and GDAL) through the gate, SQS direct to moto."""
    env = child_env(**moto.environ(), **world.dc_environ, **extra)
    env.update(gate.gdal_environ())
    env["AWS_ENDPOINT_URL_S3"] = gate.endpoint
    return env


# ------------------------------------------------------------------------ the schedule


@dataclass(frozen=True)
class Fault:
    """One decision of the schedule: inject ``kind`` ``at`` seconds into the soak."""

    at: float
    kind: str
    #: a number in [0, 1) that picks the target (runner, key) among those there then
    pick: float
    #: S3 faults: how many matching requests fail in a row (1 or 2: within every retry
    #: budget, so a healthy task must survive them)
    times: int = 1


@dataclass(frozen=True)
class Schedule:
    """The seeded fault schedule: ``faults`` faults at exponential intervals of mean
    ``mean_gap`` seconds, kinds drawn by weight; the late runner starts at ``late_at``."""

    seed: int
    faults: tuple[Fault, ...]
    late_at: float

    @classmethod
    def draw(cls, seed: int, n: int, *, mean_gap: float, late_at: float) -> Schedule:
        rng = random.Random(seed)
        kinds, weights = zip(*_WEIGHTS.items(), strict=True)
        at, out = 0.0, []
        for _ in range(max(0, n - 1)):  # the late runner is one of the n faults
            at += rng.expovariate(1.0 / mean_gap)
            kind = rng.choices(kinds, weights)[0]
            out.append(Fault(round(at, 2), kind, rng.random(), rng.choice((1, 1, 2))))
        return cls(seed, tuple(out), late_at)


# ------------------------------------------------------------------------------ the fleet


@dataclass
class _Runner:
    name: str
    proc: subprocess.Popen
    log: Path
    started: float
    signalled: str = ""

    def lines(self) -> list[str]:
        try:
            return self.log.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def current_task(self) -> str | None:
        """The task this runner computes now (its last ``Submitting`` not yet ended)."""
        current = None
        for line in self.lines():
            if m := _SUBMITTED.search(line):
                current = m.group(1)
            elif (m := _ENDED.search(line.strip())) and current in m.groups():
                current = None
        return current


@dataclass
class SoakResult:
    """What a soak did and found (:meth:`problems` lists broken invariants)."""

    seed: int
    tasks: int
    healthy: int
    poisoned: int
    #: fault kind -> decisions taken (armed S3 faults, signals sent, late runners started)
    armed: Counter = field(default_factory=Counter)
    #: fault kind -> faults that met their target (S3 requests failed by the gate,
    #: signals delivered to a runner computing a task)
    injected: Counter = field(default_factory=Counter)
    runners_started: int = 0
    #: healthy task -> STAC item PUTs that reached S3
    commits: dict[str, int] = field(default_factory=dict)
    #: healthy tasks without a complete output identical to the clean run's
    losses: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    swept: int = 0
    seconds: float = 0.0
    logs: list[Path] = field(default_factory=list)

    @classmethod
    def combine(cls, results: list[SoakResult]) -> SoakResult:
        """Several soaks (rounds) as one: counts added, losses and violations kept."""
        total = cls(results[0].seed, 0, 0, 0)
        for r in results:
            total.tasks += r.tasks
            total.healthy += r.healthy
            total.poisoned += r.poisoned
            total.armed.update(r.armed)
            total.injected.update(r.injected)
            total.runners_started += r.runners_started
            total.commits.update({f"{r.seed}:{k}": n for k, n in r.commits.items()})
            total.losses += [f"seed {r.seed}: {x}" for x in r.losses]
            total.violations += [f"seed {r.seed}: {x}" for x in r.violations]
            total.swept += r.swept
            total.seconds += r.seconds
        return total

    def problems(self) -> list[str]:
        return [f"lost {t}" for t in self.losses] + self.violations

    def table(self) -> str:
        """Faults of each kind armed / injected / survived, then the task counts."""
        lost = len(self.losses) + len(self.violations)
        rows = [("fault", "scheduled", "injected", "survived")]
        for kind in FAULT_KINDS:
            got = self.injected[kind]
            rows.append((kind, str(self.armed[kind]), str(got), str(got if not lost else "-")))
        rows.append(
            (
                "total",
                str(sum(self.armed.values())),
                str(sum(self.injected.values())),
                str(sum(self.injected.values()) if not lost else "-"),
            )
        )
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        out = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        out.insert(1, "-+-".join("-" * w for w in widths))
        once = sum(1 for n in self.commits.values() if n == 1)
        out += [
            "(scheduled: the schedule's decisions; injected: S3 requests the gate failed, "
            "signals delivered to runners at work, runners started late; survived: injected "
            "with no loss)",
            "",
            f"seed {self.seed}: {self.tasks} tasks ({self.healthy} healthy, {self.poisoned} "
            f"poisoned), {self.runners_started} runners started, {self.seconds:.0f} s",
            f"healthy tasks committed exactly once, bit-identical: {once - len(self.losses)}"
            f" of {self.healthy}; staged attempts swept after the fleet: {self.swept}",
            f"losses: {len(self.losses)}; other violations: {len(self.violations)}",
        ]
        out += [f"  {p}" for p in self.problems()]
        return "\n".join(out)


@dataclass
class _Soak:
    world: ChaosWorld
    moto: MotoServer
    gate: S3Gate
    work: Path
    runners: int
    lease: int
    max_receive_count: int
    task_delay: float
    kill_cap: int
    progress: Callable[[str], None]
    fleet: list[_Runner] = field(default_factory=list)
    kills: Counter = field(default_factory=Counter)
    #: runners whose exit keep_fleet has seen
    seen: set[str] = field(default_factory=set)

    # -- environment, configs -------------------------------------------------------------
    def environ(self, **extra: str) -> dict[str, str]:
        return world_environ(self.world, self.moto, self.gate, **extra)

    def run_config(self, name: str) -> Path:
        doc = yaml.safe_load(SEASONAL_RUN.read_text())
        doc.update(
            aws_unsigned=False,  # GDAL signs with the (fake) secret: it must not leak
            job_queue_max_lease=self.lease,
            renew_safety_margin=max(2, self.lease // 2),
            future_poll_interval=0.5,
            max_processing_time=0,
        )
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def location(self, name: str) -> str:
        return f"s3://{self.world.bucket}/{name}"

    # -- the clean run ----------------------------------------------------------------------
    def clean_run(self) -> dict[str, dict[str, bytes]]:
        """Reference outputs: ``odc-ndvi run`` of the whole task db, no fault, no delay."""
        log = self.work / "clean.log"
        with open(log, "w") as err:
            proc = subprocess.run(
                [sys.executable, "-c", SLOW_RUNNER, "run", "-v"]
                + ["--config", str(self.run_config("clean")), "--threads", "1"]
                + ["--location", self.location("clean"), str(self.world.db)],
                env=self.environ(ODC_NDVI_TEST_DELAY="0"),
                cwd=self.work,
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=900,
                check=False,
            )
        if proc.returncode != 1:  # the poisoned tasks fail, the run goes on
            raise RuntimeError(f"clean run exited {proc.returncode}:\n{_tail(log)}")
        outputs = self.outputs("clean")
        if set(outputs) != set(self.world.healthy):
            raise RuntimeError(f"clean run wrote {sorted(outputs)}:\n{_tail(log)}")
        return outputs

    def objects(self, prefix: str) -> dict[str, bytes]:
        s3 = self.moto.client("s3")
        out = {}
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.world.bucket, Prefix=prefix + "/"
        )
        for page in pages:
            for obj in page.get("Contents", []):
                out[obj["Key"][len(prefix) + 1 :]] = b""
        for key in out:
            out[key] = s3.get_object(Bucket=self.world.bucket, Key=f"{prefix}/{key}")["Body"].read()
        return out

    def outputs(self, prefix: str) -> dict[str, dict[str, bytes]]:
        """Task -> {file name: bytes} of the final objects under ``prefix`` (no staging)."""
        tasks: dict[str, dict[str, bytes]] = {}
        for key, data in self.objects(prefix).items():
            if key.startswith(".staging/"):
                continue
            folder, _, name = key.rpartition("/")
            tasks.setdefault(folder, {})[name] = data
        return tasks

    # -- the fleet --------------------------------------------------------------------------
    def start_runner(self, queue_url: str) -> _Runner:
        name = f"r{len(self.fleet) + 1:03d}"
        log = self.work / f"{name}.log"
        err = open(log, "w")  # noqa: SIM115 - the child owns it; closed here after start
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", SLOW_RUNNER, "run", "-v"]
                + ["--config", str(self.run_config("soak")), "--threads", "1"]
                + ["--location", self.location("soak"), "--from-sqs", queue_url],
                env=self.environ(ODC_NDVI_TEST_DELAY=str(self.task_delay)),
                cwd=self.work,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        finally:
            err.close()
        runner = _Runner(name, proc, log, time.monotonic())
        self.fleet.append(runner)
        return runner

    def alive(self) -> list[_Runner]:
        return [r for r in self.fleet if r.proc.poll() is None]

    def queue_depth(self, url: str) -> int:
        attrs = self.moto.client("sqs").get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )

    def inject(self, fault: Fault, result: SoakResult) -> bool:
        """Apply one scheduled fault to whatever is there now; False: a signal found no
        runner at work (the caller tries it again shortly)."""
        if fault.kind in ("sigkill", "sigterm"):
            busy = sorted(
                (r.name, r, task)
                for r in self.alive()
                if not r.signalled and (task := r.current_task()) is not None
            )
            busy = [(n, r, t) for n, r, t in busy if self.kills[t] < self.kill_cap]
            if not busy:
                return False  # no runner at work now: tried again a little later
            result.armed[fault.kind] += 1
            _, runner, task = busy[int(fault.pick * len(busy))]
            runner.signalled = fault.kind
            self.kills[task] += 1
            runner.proc.send_signal(signal.SIGKILL if fault.kind == "sigkill" else signal.SIGTERM)
            result.injected[fault.kind] += 1
            self.progress(f"{fault.at:7.1f}s {fault.kind} {runner.name} computing {task}")
            return True
        if fault.kind == "sigkill-writing":
            # the next staged .sha1 (written after every staged COG of its attempt) is
            # held at the gate; its runner is killed there (:meth:`kill_writers`)
            self.gate.fail(".sha1.part", 1, "hold", methods=("PUT",))
            result.armed[fault.kind] += 1
            return True
        read = fault.kind.startswith("s3-read")
        mode = "drop" if fault.kind.endswith("drop") else "503"
        if read:  # the next read of any scene's band, of one scene's band, an audit's
            keys = ("_QA_PIXEL.TIF", "_SR_B4.TIF", "_SR_B5.TIF", ".stac-item.json", ".sha1")
            keys += self.world.input_keys[:: max(1, len(self.world.input_keys) // 8)]
        else:  # a staged file, a move to a final name, the STAC item, any write
            keys = ("soak/.staging/", ".tif", ".stac-item.json", ".sha1", "soak/")
        key = keys[int(fault.pick * len(keys))]
        self.gate.fail(key, fault.times, mode, methods=_READ if read else _WRITE)
        result.armed[fault.kind] += 1
        return True

    def kill_writers(self, result: SoakResult) -> None:
        """SIGKILL the runners whose staged writes the gate holds (``sigkill-writing``):
        the files they staged before stay behind as orphans for the sweep."""
        import psutil

        for port, release in self.gate.take_held():
            try:
                pid = next(
                    (
                        c.pid
                        for c in psutil.net_connections("tcp4")
                        if c.laddr and c.laddr.port == port and c.raddr
                        if c.raddr.port == self.gate.port
                    ),
                    None,
                )
                runner = next((r for r in self.alive() if r.proc.pid == pid), None)
                task = runner.current_task() if runner is not None else None
                if runner is not None and task is not None and self.kills[task] < self.kill_cap:
                    runner.signalled = "sigkill"
                    self.kills[task] += 1
                    runner.proc.kill()
                    runner.proc.wait()
                    result.injected["sigkill-writing"] += 1
                    self.progress(f"sigkill-writing {runner.name} staging {task}")
            finally:
                release.set()

    def keep_fleet(self, queue_url: str, result: SoakResult) -> None:
        """Replace runners that exited (killed, or gave up on a poisoned message) while the
        queue holds work, as a Deployment restarts its pods."""
        gone = [r for r in self.fleet if r.proc.poll() is not None and r.name not in self.seen]
        if not gone:
            return
        self.seen.update(r.name for r in gone)
        if self.queue_depth(queue_url) == 0:
            return
        while len(self.alive()) < self.runners:
            self.start_runner(queue_url)
            result.runners_started += 1


# ------------------------------------------------------------------------------ the soak


def clean_outputs(
    world: ChaosWorld, moto: MotoServer, gate: S3Gate, work: Path, *, lease: int = 10
) -> dict[str, dict[str, bytes]]:
    """The reference: task -> {file name: bytes} of a clean ``odc-ndvi run`` of the world's
    task db (no fault, no delay); one serves every soak of a world."""
    work.mkdir(parents=True, exist_ok=True)
    gate.clear()
    s = _Soak(world, moto, gate, work, 1, lease, 1, 0.0, 0, lambda line: None)
    return s.clean_run()


def soak(
    world: ChaosWorld,
    moto: MotoServer,
    gate: S3Gate,
    work: Path,
    *,
    seed: int,
    faults: int,
    runners: int = 3,
    mean_gap: float = 3.0,
    lease: int = 10,
    max_receive_count: int = 6,
    task_delay: float = 0.5,
    kill_cap: int = 2,
    timeout: float = 1800.0,
    reference: dict[str, dict[str, bytes]] | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> SoakResult:
    """One soak over ``world`` (see the module doc); ``reference``: the clean run's
    outputs when already made (one clean run serves every soak of a world)."""
    work.mkdir(parents=True, exist_ok=True)
    s = _Soak(
        world, moto, gate, work, runners, lease, max_receive_count, task_delay, kill_cap, progress
    )
    if reference is None:
        progress("clean run (reference outputs)")
        reference = clean_outputs(world, moto, gate, work / "clean", lease=lease)
    gate.clear()
    _remove_prefix(moto, world.bucket, "soak/")  # an earlier soak's outputs
    schedule = Schedule.draw(seed, faults, mean_gap=mean_gap, late_at=mean_gap * 2)
    result = SoakResult(seed, len(world.tasks), len(world.healthy), len(world.poisoned), logs=[])
    queue_url, dlq_url = _queue(moto, lease, max_receive_count)
    sqs = moto.client("sqs")
    for task in sorted(world.tasks):
        sqs.send_message(QueueUrl=queue_url, MessageBody=task_message(task, world.db))
    t0 = time.monotonic()
    try:
        for _ in range(max(1, runners - 1)):
            s.start_runner(queue_url)
            result.runners_started += 1
        pending, late_started = list(schedule.faults), False
        deferred: dict[Fault, int] = {}
        while True:
            now = time.monotonic() - t0
            if not late_started and now >= schedule.late_at:
                s.start_runner(queue_url)
                result.runners_started += 1
                result.armed["late-runner"] += 1
                result.injected["late-runner"] += 1
                late_started = True
                progress(f"{now:7.1f}s late runner started")
            while pending and pending[0].at <= now:
                fault = pending.pop(0)
                if not s.inject(fault, result):
                    deferred[fault] = deferred.get(fault, 0) + 1
                    if deferred[fault] <= 20:  # for up to 10 s, then it is dropped
                        later = replace(fault, at=now + 0.5)
                        deferred[later] = deferred.pop(fault)
                        pending = sorted([*pending, later], key=lambda f: f.at)
                    else:
                        result.armed[fault.kind] += 1  # scheduled, never met a runner
            s.kill_writers(result)
            s.keep_fleet(queue_url, result)
            if late_started and not s.alive():
                if s.queue_depth(queue_url) == 0:
                    break  # the fleet is done: what the schedule holds still is dropped
                s.start_runner(queue_url)  # every runner gave up with work left
                result.runners_started += 1
            if now > timeout:
                result.violations.append(f"the soak did not end within {timeout:.0f} s")
                break
            time.sleep(0.2)
    finally:
        for r in s.fleet:
            if r.proc.poll() is None:
                r.proc.kill()
            r.proc.wait()
        result.seconds = time.monotonic() - t0
    result.logs = [r.log for r in s.fleet]
    _count_s3_faults(gate, result)
    result.swept = _sweep(s, lease)
    _check(s, result, reference, queue_url, dlq_url)
    for url in (queue_url, dlq_url):
        sqs.delete_queue(QueueUrl=url)
    return result


def _remove_prefix(moto: MotoServer, bucket: str, prefix: str) -> None:
    s3 = moto.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])


def _queue(moto: MotoServer, lease: int, max_receive_count: int) -> tuple[str, str]:
    sqs = moto.client("sqs")
    name = f"chaos-{uuid.uuid4().hex[:10]}"
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = {"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receive_count)}
    url = sqs.create_queue(
        QueueName=name,
        Attributes={"VisibilityTimeout": str(lease), "RedrivePolicy": json.dumps(policy)},
    )["QueueUrl"]
    return url, dlq


def _count_s3_faults(gate: S3Gate, result: SoakResult) -> None:
    """S3 faults that met a request: the gate answered 503 or dropped the connection."""
    for r in list(gate.requests):
        if r.fault in ("503", "drop"):
            read = r.method in _READ
            result.injected[f"s3-{'read' if read else 'write'}-{r.fault}"] += 1


def _sweep(s: _Soak, lease: int) -> int:
    """The documented sweep, once every staged object is older than the lease."""
    s3 = s.moto.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=s.world.bucket, Prefix="soak/.staging/"
    )
    stamps = [o["LastModified"].timestamp() for p in pages for o in p.get("Contents", [])]
    if stamps:  # S3's clock is this machine's (moto)
        time.sleep(max(0.0, max(stamps) + lease + 1.5 - time.time()))
    proc = subprocess.run(
        [sys.executable, "-c", SLOW_RUNNER, "sweep-staging", s.location("soak")]
        + ["--older-than", f"{lease}s"],
        env=s.environ(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    (s.work / "sweep.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"sweep-staging exited {proc.returncode}: {proc.stderr[-2000:]}")
    return sum(1 for line in proc.stdout.splitlines() if line.startswith("removed "))


def _check(
    s: _Soak,
    result: SoakResult,
    reference: dict[str, dict[str, bytes]],
    queue_url: str,
    dlq_url: str,
) -> None:
    world, v = s.world, result.violations
    if depth := s.queue_depth(queue_url):
        v.append(f"{depth} message(s) left in the queue")
    dead = Counter(queued_tasks(s.moto, dlq_url, rounds=20))
    for task in sorted(world.poisoned):
        if dead[task] != 1:
            v.append(f"poisoned task {task} is in the dead-letter queue {dead[task]} time(s)")
    for task in sorted(set(dead) - world.poisoned):
        v.append(f"healthy task {task} was dead-lettered")
    # commits: STAC item PUTs of the soak that reached S3 (the gate saw them answered 200)
    puts = Counter(
        r.key.split("/", 1)[1].rsplit("/", 1)[0]
        for r in list(s.gate.requests)
        if r.method == "PUT" and r.status == 200 and r.key.startswith("soak/")
        if r.key.endswith(".stac-item.json")
    )
    outputs = s.outputs("soak")
    staged = [k for k in s.objects("soak") if k.startswith(".staging/")]
    if staged:
        v.append(f"{len(staged)} staged object(s) left after the sweep: {staged[:3]}")
    for task in sorted(world.healthy):
        result.commits[task] = puts[task]
        got, want = outputs.get(task, {}), reference[task]
        differ = sorted(n for n in want if not _same(n, got.get(n), want[n]))
        if puts[task] != 1 or set(got) != set(want) or differ:
            result.losses.append(
                f"{task}: {puts[task]} commit(s); files {sorted(got)}; differ: {differ}"
            )
    for task in sorted(set(outputs) - world.healthy):
        v.append(f"final objects of {task} (not a healthy task): {sorted(outputs[task])}")
    for task, files in sorted(outputs.items()):
        items = [n for n in files if n.endswith(".stac-item.json")]
        if len(items) != 1:
            v.append(f"{task}: {len(items)} STAC items")
            continue
        if extra := sorted(set(files) - _listed(items[0], files)):
            v.append(f"{task}: {extra} listed neither by its STAC item nor by its .sha1")
    for r in s.fleet:
        code = r.proc.returncode
        allowed = {"sigkill": {-9}, "sigterm": {130, 0, 1}}.get(r.signalled, {0, 1})
        if code not in allowed:
            v.append(f"runner {r.name} ({r.signalled or 'no signal'}) exited {code}")
    secret = s.moto.secret_access_key
    for log in [*result.logs, s.work / "sweep.log", s.work / "clean.log"]:
        if log.exists() and secret in log.read_text(errors="replace"):
            v.append(f"the AWS secret is in {log.name}")


def _listed(item_name: str, files: dict[str, bytes]) -> set[str]:
    """File names a task's STAC item lists: its assets' hrefs, and (odc-stats' layout: the
    item names the measurement bands only) the ``.sha1`` manifest committed before it, with
    every file it names and its digest; the item and that manifest themselves."""
    doc = json.loads(files[item_name])
    names = {item_name}
    for asset in (doc.get("assets") or {}).values():
        names.add(str(asset.get("href", "")).rsplit("/", 1)[-1])
    sha1 = item_name.replace(".stac-item.json", ".sha1")
    if sha1 in files:
        names.add(sha1)
        for line in files[sha1].decode("utf8", "replace").splitlines():
            digest, _, name = line.strip().partition("  ")
            if name in files and (
                name == item_name or hashlib.sha1(files[name]).hexdigest() == digest
            ):
                names.add(name)
    return names


def _same(name: str, got: bytes | None, want: bytes) -> bool:
    """A soak's output file equals the clean run's: byte for byte, but for what records
    the moment of writing (the STAC item's timestamps, hence its line in the .sha1)."""
    if got is None:
        return False
    if name.endswith(".stac-item.json"):
        return True  # compared through what it lists (:func:`_listed`)
    if name.endswith(".sha1"):

        def lines(data: bytes) -> list[str]:
            return [x for x in data.decode().splitlines() if ".stac-item.json" not in x]

        return lines(got) == lines(want)
    return got == want


def copy_logs(result: SoakResult, dest: Path) -> None:
    """Keep a soak's runner logs (e.g. when an invariant broke)."""
    dest.mkdir(parents=True, exist_ok=True)
    for log in result.logs:
        shutil.copy2(log, dest / log.name)
