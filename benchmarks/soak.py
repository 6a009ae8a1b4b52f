"""Chaos soak: a real SQS fleet under a seeded, randomised fault schedule; one table.

The engine is ``tests/helpers/chaos.py`` (the suite's short soak, ``tests/test_chaos.py``,
runs the same code): ``odc-ndvi run --from-sqs`` runners (child processes) on moto SQS,
inputs and outputs on moto S3 through the fault gate; SIGKILL/SIGTERM of runners at work,
S3 503s and dropped connections on reads and writes, a runner started late. Then the
documented sweep, and the invariants: every healthy task committed exactly once,
bit-identical to a clean run; poisoned tasks in the dead-letter queue; no unlisted object
under a final name; no staged leftovers; no secret in any log.

    nice -n 10 python benchmarks/soak.py --seed 23 --faults 300 --tiles 4

prints: fault | armed | injected | survived, then tasks, commits, losses (must be 0).
Exit status 1 when an invariant broke (the runner logs are kept under --workdir).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from odc_ndvi_plugin.dev.index import embedded_postgres, init_index  # noqa: E402
from tests.fixtures.s3gate import serve_gate  # noqa: E402
from tests.fixtures.servers import run_moto_server  # noqa: E402
from tests.helpers.chaos import (  # noqa: E402
    SoakResult,
    clean_outputs,
    copy_logs,
    make_world,
    soak,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--faults", type=int, default=300, help="faults to inject in all")
    parser.add_argument("--tiles", type=int, default=4, help="tiles (x 4 seasonal tasks)")
    parser.add_argument("--rounds", type=int, default=1, help="soaks over the same world")
    parser.add_argument("--runners", type=int, default=3, help="runners at once")
    parser.add_argument("--mean-gap", type=float, default=1.5, help="mean s between faults")
    parser.add_argument("--lease", type=int, default=10, help="SQS lease (visibility) in s")
    parser.add_argument("--task-delay", type=float, default=0.5, help="s added per season")
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        root = (args.workdir or Path(tmp)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with (
            embedded_postgres(root / "pg", db_name="datacube", durable=False) as pg,
            run_moto_server(root / "moto.log") as moto,
            serve_gate(moto) as gate,
        ):
            env = pg.datacube_env("datacube")
            init_index(env)
            world = make_world(root / "world", env, moto, tiles=args.tiles)
            print(
                f"world: {len(world.tasks)} tasks ({len(world.poisoned)} poisoned), "
                f"set up in {time.monotonic() - t0:.0f} s",
                flush=True,
            )
            reference = clean_outputs(world, moto, gate, root / "clean", lease=args.lease)
            results = []
            per_round = max(1, args.faults // args.rounds)
            for n in range(args.rounds):
                result = soak(
                    world,
                    moto,
                    gate,
                    root / f"round{n}",
                    seed=args.seed + n,
                    faults=per_round,
                    runners=args.runners,
                    mean_gap=args.mean_gap,
                    lease=args.lease,
                    task_delay=args.task_delay,
                    reference=reference,
                    progress=lambda line: print(line, flush=True),
                )
                print(f"\n## round {n + 1} of {args.rounds}\n\n{result.table()}\n", flush=True)
                if result.problems():
                    copy_logs(result, root / f"logs-round{n}")
                results.append(result)
    total = SoakResult.combine(results)
    print(f"## all rounds (seeds {args.seed}..{args.seed + args.rounds - 1})\n")
    print(total.table())
    print(f"\nwall time {time.monotonic() - t0:.0f} s (set-up, clean run, soaks, checks)")
    return 1 if total.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
