"""The `edgefuse` command: one verb per stage.

Each room contributes its verbs from a module listed in COMMAND_MODULES, with
`register(app: typer.Typer) -> None` that imports nothing heavy at import time (torch is
imported inside the command functions). Typed EdgeFuseErrors become one line and exit 2.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer
from rich.console import Console

from edgefuse import __version__
from edgefuse.errors import EdgeFuseError

# Modules that contribute commands, in help order; one not written yet is skipped.
COMMAND_MODULES = [
    "edgefuse.data.commands",  # data
    "edgefuse.models.commands",  # models (list/show)
    "edgefuse.models.train_commands",  # train, eval
    "edgefuse.export.commands",  # export, inspect
    "edgefuse.quantize.commands",  # quantize
    "edgefuse.runtime.commands",  # ask, serve
    "edgefuse.runtime.engine_commands",  # build, doctor
    "edgefuse.parity.commands",  # validate
    "edgefuse.pipeline",  # pipeline
    "edgefuse.bench.commands",  # bench
]

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="edgefuse",
    help="Image-text fusion models from FP32 PyTorch to FP16/INT8 engines, with accuracy proven on every build.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command("version")
def version() -> None:
    """Print the edgefuse version."""
    console.print(f"edgefuse {__version__}")


def _register_rooms() -> None:
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and name.startswith(e.name):
                continue  # module not written yet
            raise
        mod.register(app)


_register_rooms()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app; typed errors -> one line on stderr, exit 2."""
    try:
        rc = app(args=argv, standalone_mode=False)
    except EdgeFuseError as e:
        err_console.print(e.line(), markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as e:  # usage errors from typer's bundled click: print them the click way
        show = getattr(e, "show", None)
        if show is None or not hasattr(e, "exit_code"):
            raise
        show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
