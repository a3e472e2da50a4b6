"""``sealroom bench`` / ``python -m bench``: measure systems side by side, one run.

Wiring into another parser::

    from bench import cli as bench_cli
    bench_cli.add_arguments(subparsers.add_parser("bench", help=...))
    ...
    return bench_cli.run(args)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from . import report
from .run import MULTI, SYSTEMS, Options, run_all, supports
from .scenarios import NAMES

DEFAULT_SIZES = {"meeting": "2,4,8,12,16,20", "broadcast": "2,10,25,50", "audio": "10,25,50",
                 "lastn": "6,10,16", "joinstorm": "10,50", "simulcast": "20"}
MAX_PARTICIPANTS = 100  # per room; the SDP of a sub offer grows ~1.7 KB per publisher


def _sizes(text: str) -> list[int]:
    try:
        out = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError("expected a comma-separated list of integers") from None
    if not out or out[0] < 2 or out[-1] > MAX_PARTICIPANTS:
        raise argparse.ArgumentTypeError(f"room sizes are 2…{MAX_PARTICIPANTS}")
    return out


def _workers(text: str) -> list[int]:
    try:
        out = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError("expected a comma-separated list of integers") from None
    if not out or out[0] < 0 or out[-1] > 64:
        raise argparse.ArgumentTypeError("worker counts are 0…64")
    return out


def _rate(text: str) -> float:
    try:
        out = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number") from None
    if not 0.05 <= out <= 16:
        raise argparse.ArgumentTypeError("the rate scale is 0.05…16")
    return out


def _within(text: str) -> float:
    try:
        out = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number") from None
    if not 0.0 <= out <= 600.0:
        raise argparse.ArgumentTypeError("the join window is 0…600 s")
    return out


def _share(text: str) -> float:
    try:
        out = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number") from None
    if not 0.0 <= out <= 0.5:
        raise argparse.ArgumentTypeError("the uplink loss is a share, 0…0.5")
    return out


def _systems(text: str) -> list[str]:
    out = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in out if x not in SYSTEMS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"systems are {', '.join(SYSTEMS)}")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--scenario", choices=NAMES, default="meeting", help="[%(default)s]")
    a("--participants", type=_sizes, default=None,
      help="room sizes, comma-separated, e.g. 2,4,8 (default depends on the scenario)")
    a("--systems", type=_systems, default=["sealroom", "reflector", "janus"],
      help=f"comma-separated, from {', '.join(SYSTEMS)} [sealroom,reflector,janus]")
    a("--windows", type=int, default=3, help="measurement windows per point [%(default)s]")
    a("--window", type=float, default=5.0, help="window length, seconds [%(default)s]")
    a("--warmup", type=float, default=3.0, help="seconds before the first window [%(default)s]")
    a("--last-n", type=int, default=4,
      help="last-N for the lastn and joinstorm scenarios [%(default)s]")
    a("--join-within", type=_within, default=2.0, metavar="S",
      help="joinstorm: the N participants join within S seconds [%(default)s]")
    a("--rooms", type=int, default=1,
      help="independent copies of the scenario, one room each (sealroom only) [%(default)s]")
    a("--workers", type=_workers, default=[0],
      help="sealroom's SFU worker processes, comma-separated counts to compare, e.g. 1,2; "
           "0 = the SFU inside the runner process [0]")
    a("--search", action="store_true",
      help="also search the highest forwarded pkt/s held at ≤0.1%% loss and p99 ≤ 5 ms")
    a("--rate", type=_rate, default=1.0,
      help="scale every stream's packet rate in the measured windows, e.g. 3.6 to offer "
           "a broadcast of 50 ~40k pkt/s [%(default)s]")
    a("--uplink-loss", type=_share, default=0.0, metavar="SHARE",
      help="each generated publisher does not send this share of its video packets (e.g. "
           "0.03), answers the server's NACKs with RTX (or the packet again) and counts "
           "what its receivers got back; any scenario; not mediarelay [%(default)s]")
    a("--loss-seed", type=int, default=1,
      help="seed of the PRNG that picks the withheld packets [%(default)s]")
    a("--gen-procs", type=int, default=1, help="load generator processes [%(default)s]")
    a("--idle", choices=("poll", "halt"), default="poll",
      help="poll: while measuring, hold the CPU latency limit at 0 µs (PM QoS, "
      "/dev/cpu_dma_latency, root) so idle cores poll instead of halting; halt: leave the "
      "machine's idle states alone [poll]")
    a("--nice", type=int, default=0,
      help="run server and generators at this niceness, e.g. -10 on a busy machine (root)")
    a("--no-pin", action="store_true", help="do not pin server and generator to cores")
    a("--out", type=Path, default=Path("bench-results"),
      help="directory for bench-<scenario>.json and .png [%(default)s]")
    a("--quick", action="store_true", help="smoke run: 1 window of 1 s, 0.5 s warm-up")
    a("--log-level", default="warning", choices=["debug", "info", "warning", "error"])


class Bar:
    """A plain progress line on stderr: [####----] k/n what."""

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.done = 0
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()

    def step(self) -> None:
        self.done += 1

    def __call__(self, text: str) -> None:
        width = 20
        filled = int(width * self.done / self.total)
        line = (f"[{'#' * filled}{'-' * (width - filled)}] {self.done}/{self.total} "
                f"{time.monotonic() - self.t0:5.0f}s {text}")
        if self.tty:
            cols = shutil.get_terminal_size((100, 20)).columns
            sys.stderr.write("\r\033[K" + line[: cols - 1])
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def options(args: argparse.Namespace) -> Options:
    opts = Options(windows=args.windows, window=args.window, warmup=args.warmup,
                   last_n=args.last_n, gen_procs=args.gen_procs, pin=not args.no_pin,
                   search=args.search, nice=args.nice, rooms=args.rooms,
                   workers=args.workers[0], rate=args.rate, idle=args.idle,
                   uplink_loss=args.uplink_loss, loss_seed=args.loss_seed,
                   join_within=args.join_within)
    if args.quick:
        opts.windows, opts.window, opts.warmup, opts.grace = 1, 1.0, 0.5, 0.3
    return opts


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if os.geteuid() != 0 and "janus" in args.systems:
        print("sealroom bench: Janus runs in a network namespace, which needs root: "
              "skipping janus", file=sys.stderr)
        args.systems = [s for s in args.systems if s != "janus"]
        if not args.systems:
            return 2
    if args.rooms < 1:
        print("sealroom bench: --rooms must be at least 1", file=sys.stderr)
        return 2
    sizes = args.participants or _sizes(DEFAULT_SIZES[args.scenario])
    opts = options(args)
    # every (system, worker count) to measure: systems without workers once, without
    # workers, and not at all with rooms > 1
    points = [(s, w) for s in args.systems for w in (args.workers if s in MULTI else [0])
              if supports(s, args.scenario, args.rooms, w, args.uplink_loss)]
    systems = sorted({s for s, _ in points}, key=args.systems.index)
    skipped = [s for s in args.systems if s not in systems]
    if skipped:
        print(f"sealroom bench: {', '.join(skipped)} cannot run {args.scenario} with "
              f"--rooms {args.rooms} --workers {','.join(map(str, args.workers))}"
              + (f" --uplink-loss {args.uplink_loss:g}" if args.uplink_loss else "")
              + ": skipped", file=sys.stderr)
    if not points:
        return 2
    bar = Bar(len(sizes) * len(points))
    started = time.time()

    async def main() -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for n in sizes:
            for system, workers in points:
                point = replace(opts, workers=workers)
                bar(f"{system} {args.scenario} N={n} rooms={args.rooms} workers={workers}")
                results += await run_all([system], args.scenario, [n], point, bar)
                bar.step()
        return results

    results = asyncio.run(main())
    bar("done")
    bar.finish()
    doc = {
        "scenario": args.scenario, "participants": sizes, "systems": systems,
        "rooms": args.rooms, "workers": args.workers, "uplink_loss": args.uplink_loss,
        "options": asdict(opts),
        "machine": report.machine(), "started": started, "seconds": time.time() - started,
        "results": results, "ratios": report.ratios(results),
        "mesh": report.mesh(args.scenario, sizes), "mesh_limit_10mbps":
            report.mesh_limit(args.scenario),
        "command": "sealroom bench " + shlex.join(
            sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]),
    }
    out: Path = args.out
    stem = report.stem(args.scenario, args.rooms, args.workers, args.uplink_loss)
    json_path = out / f"{stem}.json"
    png_path = out / f"{stem}.png"
    report.write_json(json_path, doc)
    report.plot(png_path, results, report.title(args.scenario, systems, args.rooms))
    print(report.table(results))
    workers_text = report.workers_text(results)
    if workers_text:
        print(workers_text)
    setup_text = report.setup_text(results)
    if setup_text:
        print(setup_text)
    layers_text = report.layers_text(results)
    if layers_text:
        print(layers_text)
    uplink_text = report.uplink_text(results)
    if uplink_text:
        print(uplink_text)
    for r in doc["ratios"]:
        print("  N={participants}: ".format(**r) + "  ".join(
            f"{k} {v:.2f}×" for k, v in r.items() if k != "participants"))
    print(report.mesh_text(args.scenario, sizes))
    print(f"results: {json_path}  plot: {png_path}")
    failed = [r for r in results if r.get("error")]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sealroom bench",
        description="Measure SFUs' forwarding side by side, one run (docs/BENCHMARKS.md).")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
