"""``mfm plugins``: every registered component, where it comes from, and broken plugins."""

from __future__ import annotations

import argparse
import json

from mfm_core.commands.common import add_common


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("plugins", help="list every registered component")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--params", action="store_true", help="each component's parameters, types and defaults"
    )
    add_common(parser)
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from mfm_core.introspect import component_info, format_info
    from mfm_core.registry import describe, get_registry

    registry = get_registry()
    entries = list(describe(registry))
    rows = [
        {
            "kind": e.kind,
            "name": e.name,
            "distribution": e.distribution,
            "version": e.version,
            "plugin": e.plugin,
        }
        for e in entries
    ]
    if args.params:
        for row, entry in zip(rows, entries, strict=True):
            info = component_info(entry).to_json()
            row.update(summary=info["summary"], parameters=info["parameters"])
    if args.json:
        print(json.dumps({"components": rows, "broken": registry.broken}, indent=2))
        return 0
    for row, entry in zip(rows, entries, strict=True):
        if args.params:
            print(format_info(component_info(entry)))
            continue
        origin = f"{row['distribution']} {row['version']}" if row["distribution"] else "(code)"
        print(f"{row['kind']:13} {row['name']:14} {origin}")
    for message in registry.broken.values():
        print(f"broken: {message}")
    if not args.params:
        print("(mfm plugins --params, or mfm describe KIND NAME, lists each one's parameters)")
    return 0
