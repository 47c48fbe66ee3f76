"""The command line (SPEC section 4). Only this module configures logging handlers.

Each command imports what it needs when it runs, so start-up stays light.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.errors import ConfigError, GatewayError, PulseLogError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

logger = logging.getLogger("gateway")


def _positive_float(text: str) -> float:
    try:
        if not text.isascii():  # float() would read full-width digits
            raise ValueError(text)
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _speed(text: str) -> float:
    from gateway.sources import MAX_SPEED

    value = _positive_float(text)
    if value > MAX_SPEED:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be a number above 0, at most {MAX_SPEED:g}"
        )
    return value


def _ct_rating(text: str) -> float:
    from gateway.config import BOUNDS

    lo, hi = BOUNDS["meters"]["ct_rating_a"]
    value = _positive_float(text)
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"{text!r} must be a current from {lo:g} to {hi:g} A")
    return value


# The most an LCD reading can be: nine digits of kWh, far beyond any sub-meter's display.
MAX_LCD_KWH = 999_999_999


def _lcd_kwh(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_LCD_KWH:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} must be a whole number of kWh from 0 to {MAX_LCD_KWH}"
        )
    return int(text)


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
    run.add_argument("--speed", type=_speed, metavar="X", help="run simulated time X times faster")
    run.add_argument(
        "--web", metavar="HOST:PORT", help="serve the web view and /metrics here ([web] listen)"
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
        type=_ct_rating,
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
    replay.add_argument("--db", metavar="URL", help="import into this database, exactly once")
    replay.add_argument(
        "--config", metavar="FILE", help="meters' settings (model, CT rating, pulse weights)"
    )

    def where(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config", metavar="FILE", help="read the database URL from here")
        sub.add_argument("--db", metavar="URL", help="the database (any SQLAlchemy URL)")

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    where(db_commands.add_parser("upgrade", help="migrate the database to the current schema"))

    status = commands.add_parser("status", help="show each meter's register, demand and checks")
    where(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")

    export = commands.add_parser("export", help="export interval data")
    where(export)
    export.add_argument("--format", default="csv", choices=["csv", "espi"])
    export.add_argument("--meter", metavar="NAME")
    export.add_argument(
        "--from",
        dest="start",
        metavar="T",
        help="intervals starting at or after (a date: its 00:00 UTC)",
    )
    export.add_argument(
        "--to", dest="end", metavar="T", help="intervals ending at or before (a date: its end, UTC)"
    )
    export.add_argument(
        "--period",
        metavar="YYYY-MM",
        help="each meter's billing period (by its read schedule), as bill --period",
    )

    bill = commands.add_parser("bill", help="billing determinants of each meter for a period")
    where(bill)
    bill.add_argument("--period", metavar="YYYY-MM", help="default: the latest period read")
    bill.add_argument("--meter", metavar="NAME")
    bill.add_argument("--format", default="csv", choices=["csv", "json"])

    reconcile = commands.add_parser("reconcile", help="record a reading off the meter's LCD")
    where(reconcile)
    reconcile.add_argument("--meter", required=True, metavar="NAME")
    reconcile.add_argument("--lcd-kwh", required=True, type=_lcd_kwh, metavar="N")
    reconcile.add_argument("--time", metavar="T", help="when it was read (default: now)")
    _fleet_parsers(commands, status=status, export=export, bill=bill)
    return parser


# -- the fleet collector (docs/fleet.md): `collect`, and `status`, `bill`, `export` on its
# database (found by its schema from --db) with --gateway to narrow.


class _CollectorConfig(argparse.Action):
    """``collect --config``: its help names the default file, looked up only when help is shown
    (the fleet's configuration module pulls in the gateway's; other commands start without)."""

    @property
    def help(self) -> str:
        from gateway.fleet.config import DEFAULT_COLLECTOR_CONFIG

        return f"[collector] configuration (default {DEFAULT_COLLECTOR_CONFIG})"

    @help.setter
    def help(self, _value: str | None) -> None:
        pass  # the property above says it

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)


def _fleet_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    **fleet_aware: argparse.ArgumentParser,
) -> None:
    collect = commands.add_parser(
        "collect", help="collect every gateway's intervals, reads and events into one database"
    )
    collect.add_argument("--config", action=_CollectorConfig, metavar="FILE")
    collect.add_argument(
        "--web", metavar="HOST:PORT", help="serve the fleet page and /metrics here ([web] listen)"
    )
    for sub in fleet_aware.values():
        sub.add_argument("--gateway", metavar="ID", help="on a fleet database: only this gateway")


def _cmd_collect(args: argparse.Namespace) -> int:
    from gateway.daemon.signals import Signals

    signals = Signals()
    signals.install()
    from gateway.fleet.collector import Collector
    from gateway.fleet.config import DEFAULT_COLLECTOR_CONFIG, load_collector

    settings = load_collector(args.config or DEFAULT_COLLECTOR_CONFIG)
    if args.web:
        import dataclasses

        from gateway.config import check_web

        web_settings = dataclasses.replace(settings.web, listen=args.web)
        check_web(web_settings, "--web")
        settings = dataclasses.replace(settings, web=web_settings)
    collector = Collector(settings)
    web = None
    if settings.web.listen is not None:
        from gateway.web.fleet import collector_web

        # Bound before the database is touched; a --web address's failure names --web.
        where = "--web" if args.web else f"{args.config or DEFAULT_COLLECTOR_CONFIG}: web"
        web = collector_web(settings, collector, where)
    try:
        if web is not None:
            web.start()
            print(f"web view on {web.url}", file=sys.stdout, flush=True)
        return collector.run(signals)
    finally:
        if web is not None:
            web.stop()


def _fleet_command(args: argparse.Namespace) -> int | None:
    """Run status, bill or export on a fleet database; None: the database is a gateway's."""
    if args.command not in ("status", "bill", "export"):
        return None
    from gateway.fleet.commands import run_fleet_command

    return run_fleet_command(args)


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
    for noisy in ("matplotlib", "PIL", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _cmd_run(args: argparse.Namespace) -> int:
    # Handlers first (main installed them before parsing): a SIGTERM during start-up still
    # ends in a clean, committed stop.
    from gateway.daemon.signals import installed

    signals = installed()

    import dataclasses

    from gateway.config import (
        DEFAULT_CONFIG_PATH,
        embedded_defaults,
        load_config,
        read_schedule,
    )
    from gateway.daemon.service import Service

    if args.config and args.simulate:
        # Which meters would be simulated, and where would they be stored? Say so, never guess.
        raise ConfigError(
            "run: --simulate runs the embedded defaults and --config FILE the file's meters;"
            ' give one (a simulated meter in a file is source = "simulate")'
        )
    if args.config:
        config = load_config(args.config)
    elif args.simulate:
        config = embedded_defaults()
    elif os.path.exists(DEFAULT_CONFIG_PATH):
        config = load_config(DEFAULT_CONFIG_PATH)
    else:
        raise ConfigError(f"run: give --config FILE or --simulate (no {DEFAULT_CONFIG_PATH})")
    if args.speed:
        meters = tuple(m.with_speed(args.speed) for m in config.meters)
        config = dataclasses.replace(config, meters=meters)
    for index, meter in enumerate(config.meters):
        # The file's meters were checked when it was read; the embedded ones are checked here,
        # so a bad TZ stops start-up before the database is created.
        read_schedule(config.billing, meter, f"{config.path or 'defaults'}: meters[{index}]")
    from gateway.sources import source_class

    for name in dict.fromkeys(m.source for m in config.meters):
        source_class(name).check_host()  # before anything is opened: a restart cannot fix it
    if args.web:
        from gateway.config import check_web

        config = dataclasses.replace(config, web=dataclasses.replace(config.web, listen=args.web))
        check_web(config.web, "--web")
    if signals.stop.is_set():  # asked to stop before anything was opened
        logger.info("stopped before starting")
        return EXIT_OK
    web = None
    if config.web.listen is not None:
        from gateway.web import gateway_web

        # Bound before the database is touched; a --web address's failure names --web.
        web, holder = gateway_web(config, "--web" if args.web else None)
    try:
        service = Service(config, out=sys.stdout)
        if web is not None:
            service.observers.append(holder.observe)
            service.on_stop.append(web.stop)
            web.start()
            print(f"web view on {web.url}", file=sys.stdout, flush=True)
        return service.run(signals)
    finally:
        if web is not None:
            web.stop()


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
    from gateway.batch.command import replay

    if args.db is not None:
        from gateway.config import check_database_url

        check_database_url(args.db, "--db")

    replay(
        args.logs,
        as_json=args.json,
        intervals_csv=args.intervals,
        plot_png=args.plot,
        db_url=args.db,
        config_path=args.config,
    )
    return EXIT_OK


def _cmd_db(args: argparse.Namespace) -> int:
    from gateway.commands.database import db_upgrade, upgrade_url

    db_upgrade(upgrade_url(args.config, args.db))
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from gateway.commands.database import database_url, status

    status(database_url(args.config, args.db), args.json)
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from gateway.commands.database import database_url, export

    if args.format == "espi":
        from gateway.commands.espi import export_espi

        export_espi(
            database_url(args.config, args.db),
            args.meter,
            args.start,
            args.end,
            period=args.period,
        )
        return EXIT_OK
    export(
        database_url(args.config, args.db),
        args.format,
        args.meter,
        args.start,
        args.end,
        period=args.period,
    )
    return EXIT_OK


def _cmd_bill(args: argparse.Namespace) -> int:
    from gateway.commands.bill import bill, configured_meters
    from gateway.commands.database import database_url

    meters = configured_meters(args.config, args.db)
    bill(
        database_url(args.config, args.db), args.period, args.meter, args.format, configured=meters
    )
    return EXIT_OK


def _cmd_reconcile(args: argparse.Namespace) -> int:
    from gateway.commands.database import database_url, reconcile

    reconcile(database_url(args.config, args.db), args.meter, args.lcd_kwh, args.time)
    return EXIT_OK


COMMANDS = {
    "run": _cmd_run,
    "simulate": _cmd_simulate,
    "replay": _cmd_replay,
    "db": _cmd_db,
    "status": _cmd_status,
    "export": _cmd_export,
    "reconcile": _cmd_reconcile,
    "bill": _cmd_bill,
    "collect": _cmd_collect,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    from gateway.daemon.signals import install_early, run_requested

    if run_requested(list(sys.argv[1:] if argv is None else argv)):
        install_early()  # the console script's first chance (python -m gateway's came earlier)
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        fleet = _fleet_command(args)
        if fleet is not None:
            return fleet
        return COMMANDS[args.command](args)
    except (ConfigError, PulseLogError) as exc:
        print(f"amr-gateway: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        print(f"amr-gateway: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_OK
