"""Command line of the local stack: `python -m devstack up|down|status|env|workers`."""

from __future__ import annotations

import argparse
import sys

from devstack import stack
from devstack.config import StackPaths

DESCRIPTION = (
    "Dev-only local stack on 127.0.0.1: Docker engine, registry (port 5000), AWS emulator "
    "(moto, port 5001), Prefect server (port 4200) and the base image. State, logs and "
    "pidfiles live in .stack/ of the repository, or in DEVSTACK_STATE_DIR."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="start what is not running, wait until healthy, write the env file")
    up.add_argument(
        "--no-base-image",
        action="store_true",
        help="skip checking and building the base image",
    )
    commands.add_parser("down", help="stop every process the stack started; state stays on disk")
    commands.add_parser(
        "status",
        help="print one line per part; exit 1 unless engine and services are healthy",
    )
    commands.add_parser("env", help='print `export` lines for eval "$(python -m devstack env)"')
    commands.add_parser(
        "workers",
        help="start the ECS worker, the deployer worker and the task runner (after bootstrap)",
    )
    commands.add_parser(
        "runner",
        help="start the task runner alone (tests start their own workers on their own pools)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    paths = StackPaths.from_env()
    try:
        if args.command == "up":
            stack.up(paths, with_base_image=not args.no_base_image)
        elif args.command == "down":
            stack.down(paths)
        elif args.command == "status":
            return 0 if stack.status(paths) else 1
        elif args.command == "env":
            sys.stdout.write(stack.env_text(paths))
        elif args.command == "workers":
            stack.start_workers(paths)
        elif args.command == "runner":
            stack.start_workers(paths, runner_only=True)
    except (stack.StackError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
