"""The command line (SPEC section 4). Only this module configures logging handlers.

Each command imports what it needs when it runs, so start-up stays light.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from gateway import __version__
from gateway.errors import ConfigError, GatewayError, PulseLogError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

logger = logging.getLogger("gateway")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amr-gateway",
        description="Automatic meter reading gateway for Leviton Series 1000/2000 sub-meters.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the gateway daemon")
    run.add_argument("--config", metavar="FILE", help="configuration file (TOML)")
    run.add_argument(
        "--simulate", action="store_true", help="simulate one meter (embedded defaults)"
    )
    run.add_argument(
        "--speed", type=_positive_float, metavar="X", help="run simulated time X times faster"
    )

    simulate = commands.add_parser(
        "simulate", help="run the meter model over a load profile and write its pulse log"
    )
    simulate.add_argument("--profile", required=True, metavar="PROFILE.csv")
    simulate.add_argument("--out", required=True, metavar="LOG", help="pulse log (.gz: gzip)")
    simulate.add_argument("--meter", default="meter1", metavar="NAME")
    simulate.add_argument("--model", default="2O208-4W", metavar="MODEL")
    simulate.add_argument(
        "--ct-rating",
        type=_positive_float,
        default=200.0,
        metavar="A",
        help="CT primary rating in amperes (default 200)",
    )
    replay = commands.add_parser(
        "replay", help="reconstruct energy, demand and intervals from captured pulse logs"
    )
    replay.add_argument("logs", nargs="+", metavar="LOG", help="pulse logs (plain or .gz)")
    replay.add_argument("--json", action="store_true", help="print one JSON object")
    replay.add_argument("--intervals", metavar="CSV", help="write 15-minute interval data")
    replay.add_argument("--plot", metavar="PNG", help="draw the load profile (needs [plot])")
    return parser


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # Under systemd, journald adds timestamps itself.
    if os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.config import embedded_defaults
    from gateway.service import Service

    if args.config:
        raise ConfigError("--config: configuration files come with a later release")
    if not args.simulate:
        raise ConfigError("run: give --config FILE or --simulate")
    config = embedded_defaults(speed=args.speed or 1.0)
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return Service(config, out=sys.stdout).run(stop)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from gateway.commands.simulate import simulate

    summary = simulate(
        args.profile, args.out, meter=args.meter, model=args.model, ct_rating_a=args.ct_rating
    )
    print(
        f"{args.out}: {summary.meter} {summary.start} .. {summary.end}: "
        f"{summary.energy_wh} Wh, {summary.edges_10} edges on 10, {summary.edges_1k} on 1K"
    )
    return EXIT_OK


def _cmd_replay(args: argparse.Namespace) -> int:
    from gateway.commands.replay import replay

    replay(args.logs, as_json=args.json, intervals_csv=args.intervals, plot_png=args.plot)
    return EXIT_OK


COMMANDS = {"run": _cmd_run, "simulate": _cmd_simulate, "replay": _cmd_replay}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, PulseLogError) as exc:
        print(f"amr-gateway: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        print(f"amr-gateway: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_OK
