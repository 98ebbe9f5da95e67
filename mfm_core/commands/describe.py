"""``mfm describe KIND NAME``: a component's parameters, with type, default and meaning."""

from __future__ import annotations

import argparse
import json

from mfm_core.commands.common import add_common


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "describe", help="a component's parameters: type, default and what each one does"
    )
    parser.add_argument(
        "kind",
        help="coupler, path, vector_field, solver, dataset, metric, cost, feature_map or tracker",
    )
    parser.add_argument("name", help="the component's name, as in `mfm plugins`")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_common(parser)
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from mfm_core.introspect import component_info, format_info
    from mfm_core.registry import get_registry

    info = component_info(get_registry().get(args.kind, args.name))
    print(json.dumps(info.to_json(), indent=2) if args.json else format_info(info))
    return 0
