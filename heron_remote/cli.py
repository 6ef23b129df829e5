"""The ``heron-remote`` command: ``forwarders`` and ``demo``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from ._version import __version__
from .errors import HeronRemoteError
from .settings import ForwarderPorts, Settings


def _forwarders(args: argparse.Namespace) -> int:
    from .forwarders import Forwarders

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
    with Forwarders(host=args.host, ports=ports) as fw:
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
    result = run_demo(seconds=args.seconds, shape=shape, dtype=args.dtype, fps=args.fps, settings=Settings.from_env())
    print(result.report())
    return 0 if result.frames > 0 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heron-remote", description=__doc__)
    parser.add_argument("--version", action="version", version=f"heron_remote {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    fw = sub.add_parser("forwarders", help="run the data, parameters and proof-of-life forwarders")
    fw.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; 0.0.0.0 exposes them)")
    fw.add_argument("--data", nargs=2, type=int, default=(6560, 6561), metavar=("SUBMIT", "PUBLISH"))
    fw.add_argument("--parameters", nargs=2, type=int, default=(6563, 6564), metavar=("SUBMIT", "PUBLISH"))
    fw.add_argument("--proof-of-life", nargs=2, type=int, default=(6569, 6570), metavar=("SUBMIT", "PUBLISH"))
    fw.set_defaults(run=_forwarders)

    demo = sub.add_parser("demo", help="stream the synthetic camera through a local source and measure it")
    demo.add_argument("--seconds", type=float, default=5.0)
    demo.add_argument("--shape", default="1024x1280", help="frame shape, HxW (default 1024x1280)")
    demo.add_argument("--dtype", default="uint8")
    demo.add_argument("--fps", type=float, default=100.0, help="frames per second (0: as fast as possible)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
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
