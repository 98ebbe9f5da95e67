"""The subcommands of ``mfm``: one module each, its parser beside its code.

Each module has ``add_parser(subparsers)``, which registers the command with its function
as ``func``; ``mfm_core.cli`` keeps the dispatch and the error handling.
"""
