"""The heron-remote command: forwarders, demo, check, status and bench."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time

from ._version import __version__
from .errors import HeronRemoteError
from .settings import ForwarderPorts, Settings

_DESCRIPTION = (
    "heron_remote runs the source nodes of an experiment pipeline (cameras, DAQs) on this rig or on "
    "acquisition PCs over SSH. This command runs the forwarders, a demo, a preflight check of a PC, "
    "the live status of the running sources and the benchmark."
)


def _forwarders(args: argparse.Namespace) -> int:
    from .forwarders_share import start_forwarders

    ports = ForwarderPorts(
        data_submit=args.data[0],
        data_publish=args.data[1],
        parameters_submit=args.parameters[0],
        parameters_publish=args.parameters[1],
        proof_of_life_submit=args.proof_of_life[0],
        proof_of_life_publish=args.proof_of_life[1],
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with start_forwarders(args.host, ports) as fw:
        p = fw.ports
        print(
            f"forwarders on {args.host}: data {p.data_submit}->{p.data_publish}, "
            f"parameters {p.parameters_submit}->{p.parameters_publish}, "
            f"proof of life {p.proof_of_life_submit}->{p.proof_of_life_publish}. Ctrl-C stops them.",
            flush=True,
        )
        while not stop.wait(0.5):
            if fw.error is not None:
                print(f"a forwarder failed: {fw.error}", file=sys.stderr)
                return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    shape = tuple(int(n) for n in args.shape.lower().split("x"))
    print(
        f"demo: synthetic camera {args.shape} {args.dtype} at {args.fps:g} frames/s for {args.seconds:g} s", flush=True
    )
    settings = Settings.from_env()
    if args.ssh_info:
        settings = settings.replace(ssh_info=args.ssh_info)
    result = run_demo(
        seconds=args.seconds,
        shape=shape,
        dtype=args.dtype,
        fps=args.fps,
        settings=settings,
        host=args.remote or None,
    )
    where = f" (worker on {args.remote})" if args.remote else ""
    print(result.report() + where)
    return 0 if result.frames > 0 else 1


def _check(args: argparse.Namespace) -> int:
    from .ssh.check import check_server

    report = check_server(args.server, ssh_info=args.ssh_info, port=args.port, timeout=args.timeout)
    print(report)
    return 0 if report.ok else 1


def _status(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .status import StatusBoard, render

    port = args.port or Settings.from_env().ports.proof_of_life_publish
    with StatusBoard(args.host, port, unknown_after=args.unknown_after, forget_after=args.forget_after) as board:
        if args.json or args.once:
            sources = board.poll(args.wait)
            if args.json:
                print(json.dumps([asdict(s) for s in sources.values()], indent=2))
            else:
                print(render(sources))
            if board.rejected:
                print(_rejected(board.rejected), file=sys.stderr)
            return 0 if sources else 1
        # Ctrl-C or TERM ends the live board, even when started by a shell that ignores SIGINT
        # for its background jobs (Python then leaves SIGINT ignored).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.default_int_handler)
        try:
            while True:
                sources = board.poll(1.0)
                # Clear the screen and go home: a live table, refreshed each second.
                print("\x1b[2J\x1b[H" + time.strftime("%H:%M:%S ") + f"sources on {args.host}:{port}\n", flush=True)
                print(render(sources), flush=True)
                if board.rejected:
                    print(_rejected(board.rejected), flush=True)
        except KeyboardInterrupt:
            return 0


def _rejected(count: int) -> str:
    return (
        f"({count} message(s) on the status topic were not a status and were ignored: "
        "some other program publishes there)"
    )


def _bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    rest = args.bench_args
    return bench_main(rest[1:] if rest[:1] == ["--"] else rest)


def _logging_options() -> argparse.ArgumentParser:
    """-v and -q, taken before or after the subcommand (a subcommand's own defaults stay out of the way)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging: -v info, -vv debug"
    )
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="log errors only")
    return common


def _command(
    sub: argparse._SubParsersAction, name: str, common: argparse.ArgumentParser, what: str
) -> argparse.ArgumentParser:
    """A subcommand that takes -v and -q too, its help line also the top of its own --help."""
    return sub.add_parser(name, parents=[common], help=what, description=what[0].upper() + what[1:] + ".")


def _add_forwarders(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    d = ForwarderPorts()
    fw = _command(sub, "forwarders", common, "run the data, parameters and proof-of-life forwarders")
    fw.add_argument(
        "--host", default="127.0.0.1", help="interface to bind; 0.0.0.0 exposes them (default: %(default)s)"
    )
    for option, submit, publish, what in (
        ("--data", d.data_submit, d.data_publish, "data"),
        ("--parameters", d.parameters_submit, d.parameters_publish, "parameters"),
        ("--proof-of-life", d.proof_of_life_submit, d.proof_of_life_publish, "proof-of-life"),
    ):
        fw.add_argument(
            option,
            nargs=2,
            type=int,
            default=(submit, publish),
            metavar=("SUBMIT", "PUBLISH"),
            help=f"the {what} forwarder's ports: publishers connect to SUBMIT, subscribers to PUBLISH "
            f"(default: {submit} {publish})",
        )
    fw.set_defaults(run=_forwarders)


def _add_demo(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    demo = _command(
        sub, "demo", common, "stream a synthetic camera through a source, here or on a PC (--remote), and measure it"
    )
    demo.add_argument(
        "--seconds", type=float, default=5.0, help="how long to measure, in seconds (default: %(default)s)"
    )
    demo.add_argument("--shape", default="1024x1280", help="frame shape, HxW (default: %(default)s)")
    demo.add_argument("--dtype", default="uint8", help="numpy dtype of the frames (default: %(default)s)")
    demo.add_argument(
        "--fps", type=float, default=100.0, help="frames per second, 0 as fast as possible (default: %(default)s)"
    )
    demo.add_argument(
        "--remote", metavar="ID", help="run the camera on this registry server (id or Name); default: this machine"
    )
    demo.add_argument(
        "--ssh-info",
        metavar="PATH",
        help="the server registry (default: $HERON_REMOTE_SSH_INFO, then ~/.config/heron_remote/ssh_info.json)",
    )
    demo.set_defaults(run=_demo)


def _add_check(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    check = _command(sub, "check", common, "preflight an acquisition PC: connection, host key, versions, ports, RTT")
    check.add_argument("server", help="registry id or Name")
    check.add_argument("--port", type=int, default=0, help="also check the node's port group PORT..PORT+3")
    check.add_argument("--ssh-info", metavar="PATH", help="the server registry")
    check.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the connection (default: %(default)s)"
    )
    check.set_defaults(run=_check)


def _add_status(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from .status import FORGET_AFTER_S, UNKNOWN_AFTER_S

    status = _command(sub, "status", common, "live table of the sources (state, rates, gaps, restarts, RTT, errors)")
    status.add_argument(
        "--host", default="127.0.0.1", help="where the proof-of-life forwarder runs (default: %(default)s)"
    )
    status.add_argument(
        "--port",
        type=int,
        default=0,
        help="its publish port (default: 6570, or $HERON_REMOTE_PORT_PROOF_OF_LIFE_PUBLISH)",
    )
    status.add_argument("--json", action="store_true", help="print one snapshot as JSON and exit")
    status.add_argument("--once", action="store_true", help="print the table once and exit")
    status.add_argument(
        "--wait", type=float, default=2.5, help="seconds to listen for --json and --once (default: %(default)s)"
    )
    status.add_argument(
        "--unknown-after",
        type=float,
        default=UNKNOWN_AFTER_S,
        metavar="S",
        help="a source not heard from for S seconds is shown 'unknown' (default: %(default)s)",
    )
    status.add_argument(
        "--forget-after",
        type=float,
        default=FORGET_AFTER_S,
        metavar="S",
        help="and dropped after S seconds, a stopped one too (default: %(default)s)",
    )
    status.set_defaults(run=_status)


def build_parser() -> argparse.ArgumentParser:
    # Two sets of the same options: set_defaults() below changes the top level's actions, which the
    # subcommands must not share (theirs stay unset unless given, so as not to undo the top level's).
    parser = argparse.ArgumentParser(prog="heron-remote", description=_DESCRIPTION, parents=[_logging_options()])
    parser.set_defaults(verbose=0, quiet=False)
    common = _logging_options()
    parser.add_argument("--version", action="version", version=f"heron_remote {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_forwarders(sub, common)
    _add_demo(sub, common)
    _add_check(sub, common)
    _add_status(sub, common)
    bench = sub.add_parser(
        "bench", help="measure the source path against raw transports (bench --help)", add_help=False
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="options for the benchmark")
    bench.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # all its options, --help included, are the benchmark's own
        argv = ["bench", "--", *argv[1:]]
    args = build_parser().parse_args(argv)
    level = logging.ERROR if args.quiet else logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except HeronRemoteError as exc:
        print(f"heron-remote: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
