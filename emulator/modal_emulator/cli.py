"""Command line of the emulator: ``modal-emulator serve``, ``kill`` and ``image pull|import``.

``serve`` prints ``MODAL_SERVER_URL=http://127.0.0.1:PORT`` once ready; point the ``modal`` SDK at it
with that variable plus any non-empty ``MODAL_TOKEN_ID`` / ``MODAL_TOKEN_SECRET``.
``kill`` makes a running sandbox die as if it crashed (its serving emulator then reports it finished).
``image pull REF`` builds a base image into the machine's base cache ahead of time; ``image import REF
SOURCE`` makes REF resolve to a root-filesystem tarball or an OCI image layout (see :mod:`runtime.bases`).
Both need Linux and root (sandboxes are namespaces and overlay mounts).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from modal_emulator import __version__


def _check_platform() -> str | None:
    """Why the emulator cannot run here, or None."""
    if not sys.platform.startswith("linux"):
        return f"modal-emulator needs Linux (namespaces, overlayfs); this is {sys.platform}."
    if os.geteuid() != 0:
        return "modal-emulator needs root (it creates mount, PID and network namespaces); run it as root."
    return None


_BASE_CACHE_HELP = (
    "where base images are cached, shared by every emulator on this machine "
    "(default: $MODAL_EMULATOR_BASE_CACHE, else /var/cache/modal-emulator)"
)


def _image_command(args: argparse.Namespace) -> int:
    from modal_emulator.runtime.bases import BaseBuildError, BaseCache, UnknownReference

    cache = BaseCache(args.base_cache)
    try:
        if args.image_command == "pull":
            for reference in args.reference:
                base = cache.resolve(reference, log=lambda text: print(text, end="", file=sys.stderr))
                print(f"{reference}: {base.rootfs}")
        else:
            base = cache.import_image(args.reference, args.source,
                                      log=lambda text: print(text, end="", file=sys.stderr))
            print(f"{args.reference}: {base.rootfs}")
    except (UnknownReference, BaseBuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modal-emulator", description="A local emulator of Modal's API.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve Modal's API on a loopback port")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port to listen on (default: 0, any free port)")
    serve.add_argument("--state-dir", type=pathlib.Path, required=True, help="where images, volumes, apps live")
    serve.add_argument("--ready-file", type=pathlib.Path, help="also write the MODAL_SERVER_URL=... line here")
    serve.add_argument("--latency-ms", type=int, default=0, help="delay every RPC by this many milliseconds")
    serve.add_argument(
        "--fail",
        action="append",
        default=[],
        metavar="RPC=RATE[:CODE]",
        help="fail this fraction of calls to RPC (or * for all) with a gRPC status (default UNAVAILABLE)",
    )
    serve.add_argument(
        "--fault-seed",
        type=int,
        metavar="N",
        help="seed the random choice of --fail, so that the same sequence of calls fails the same calls",
    )
    serve.add_argument(
        "--unavailable-gpu",
        action="append",
        default=[],
        metavar="TYPE",
        help="refuse sandboxes that ask for this GPU type (e.g. H100), as Modal refuses a type it does not offer; "
        "can be repeated",
    )
    serve.add_argument(
        "--list-omits-details", action="store_true", help="leave tags and tunnels out of sandbox list pages"
    )

    serve.add_argument("--base-cache", type=pathlib.Path, metavar="DIR", help=_BASE_CACHE_HELP)

    image = commands.add_parser("image", help="fill the machine's base-image cache")
    image_commands = image.add_subparsers(dest="image_command", required=True)
    pull = image_commands.add_parser("pull", help="build the base of a Debian or python reference now")
    pull.add_argument("reference", nargs="+", metavar="REF")
    pull.add_argument("--base-cache", type=pathlib.Path, metavar="DIR", help=_BASE_CACHE_HELP)
    imported = image_commands.add_parser("import", help="make REF resolve to a rootfs tarball or an OCI layout")
    imported.add_argument("reference", metavar="REF")
    imported.add_argument("source", type=pathlib.Path, metavar="SOURCE",
                          help="docker/podman export tarball, or OCI image layout (directory or archive)")
    imported.add_argument("--base-cache", type=pathlib.Path, metavar="DIR", help=_BASE_CACHE_HELP)

    kill = commands.add_parser("kill", help="kill a running sandbox as if it crashed")
    kill.add_argument("sandbox_id")
    kill.add_argument("--state-dir", type=pathlib.Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    problem = _check_platform()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from modal_emulator.server.core import FaultRule
        from modal_emulator.server.serve import ServeOptions, run

        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print("warning: the SDK accepts the emulator's plain-HTTP command router only on loopback", file=sys.stderr)
        try:
            faults = [FaultRule.parse(text) for text in args.fail]
        except ValueError as exc:
            print(f"error: --fail: {exc}", file=sys.stderr)
            return 2
        if args.latency_ms < 0:
            print("error: --latency-ms must not be negative", file=sys.stderr)
            return 2
        options = ServeOptions(
            state_dir=args.state_dir,
            host=args.host,
            port=args.port,
            ready_file=args.ready_file,
            latency_ms=args.latency_ms,
            faults=faults,
            fault_seed=args.fault_seed,
            list_omits_details=args.list_omits_details,
            base_cache=args.base_cache,
            unavailable_gpus=frozenset(args.unavailable_gpu),
        )
        return run(options)
    if args.command == "image":
        return _image_command(args)
    if args.command == "kill":
        from modal_emulator.runtime.container import kill_sandbox

        if kill_sandbox(args.state_dir.resolve(), args.sandbox_id):
            print(f"killed {args.sandbox_id}")
            return 0
        print(f"error: no running sandbox {args.sandbox_id} under {args.state_dir}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
