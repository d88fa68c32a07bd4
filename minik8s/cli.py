"""The ``minik8s`` command: one entry point, one subcommand per component.

Each component owns its own ``main`` module with ``add_arguments(parser)`` and
``run(args) -> int``; this module only dispatches, importing the component lazily so
that ``minik8s proxy --dry-run`` does not pay for the apiserver's imports.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# subcommand -> (module, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("apiserver.up", "apiserver on the embedded store + operators (+ proxy), kubeconfig"),
    "apiserver": ("apiserver.main", "the Kubernetes REST and watch API"),
    "operators": ("operators.main", "service and endpoint operators (kopf)"),
    "proxy": ("proxy.main", "reconcile Services and EndpointSlices into IPVS"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand; with ``command``, only that one's module is imported for its
    arguments (``minik8s up`` does not import the operators and the proxy to start)."""
    parser = argparse.ArgumentParser(prog="minik8s", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command is None or command == name:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    rc: int = args._module.run(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
