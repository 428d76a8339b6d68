"""The parallel magics, as ipyparallel has them: run notebook code on the engines.

``%px code`` and ``%%px`` (a whole cell) execute on the engines of one ``DirectView``,
``%autopx`` sends every following cell there until ``%autopx`` again, ``%pxresult`` shows
the last non-blocking ``%px``'s output, ``%pxconfig`` sets the defaults. A client made
inside IPython registers them on its engines (``Client.activate``), ``view.activate(s)``
adds a set named ``%px<s>`` for another view, and ``%load_ext corral`` registers them
before any client exists (the first use connects to the default profile's cluster).

A blocking ``%%px`` shows each engine's output while the cell runs (``--stream``, the
default in an interactive session) or once it is done, raises the engines' errors as a
``CompositeError``, and on Ctrl-C sends the engines a signal (SIGINT unless
``--signal-on-interrupt`` says otherwise) and waits for them, so one interrupt stops the
cell everywhere.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import sys
import time
import warnings

from IPython import get_ipython
from IPython.core import magic_arguments
from IPython.core.error import UsageError
from IPython.core.magic import Magics, magics_class, no_var_expand

from corral import error
from corral.client.display import _progress_bar, update_progress
from corral.client.outputs import GROUPBY, LiveOutput, render_outputs

__all__ = ["ParallelMagics", "activate_first_client", "activate_view",
           "load_ipython_extension"]

#: How often a blocking ``%%px`` looks for new output to show while it waits.
POLL_SECONDS = 0.1
#: How long the engines get to finish after an interrupt before their output is shown
#: (ipyparallel's 1 s: a signal that does not stop them must not hold the prompt).
AFTER_INTERRUPT_SECONDS = 1.0

NO_LAST_RESULT = "%pxresult shows the result of the last %px, and no %px has run yet."


def _noninteractive() -> bool:
    """``IPP_NONINTERACTIVE=1`` (ipyparallel's switch, for scripts and CI) turns off
    streaming by default, so output comes in one piece per engine."""
    return os.environ.get("IPP_NONINTERACTIVE", "") not in ("", "0")


def _options(*specs):
    """Adds argparse options (IPython's ``magic_arguments``) to a magic, one
    ``(flags, settings)`` pair each, listed in the order ``--help`` shows them."""
    def add(f):
        for flags, settings in reversed(specs):
            f = magic_arguments.argument(*flags, **settings)(f)
        return f
    return add


_EXEC_OPTIONS = (
    (("-b", "--block"), dict(action="store_const", const=True, dest="block",
                             help="wait for the engines and show their output")),
    (("-a", "--noblock"), dict(action="store_const", const=False, dest="block",
                               help="return an AsyncResult at once")),
    (("--stream",), dict(action="store_const", const=True, dest="stream",
                         help="show output while the cell runs (blocking only)")),
    (("--no-stream",), dict(action="store_const", const=False, dest="stream",
                            help="show output once the cell is done")),
    (("-t", "--targets"), dict(type=str, help="the engines: all, 0, [0, 2] or a slice "
                                              "of the engine ids such as 1::2")),
    (("--verbose",), dict(action="store_const", const=True, dest="verbose",
                          help="say where each execution goes")),
    (("--no-verbose",), dict(action="store_const", const=False, dest="verbose",
                             help="say nothing about where executions go")),
    (("--progress-after",), dict(dest="progress_after", type=float, default=None,
                                 help="seconds before a progress bar appears "
                                      "(-1: never, 0: at once)")),
    (("--signal-on-interrupt",), dict(dest="signal_on_interrupt", type=str, default=None,
                                      help="signal sent to the engines on Ctrl-C "
                                           "(default SIGINT; a name or a number, "
                                           "0 sends none that acts)")),
)

_OUTPUT_OPTIONS = (
    (("-r",), dict(action="store_const", dest="groupby", const="order",
                   help="same as --group-outputs=order")),
    (("-e",), dict(action="store_const", dest="groupby", const="engine",
                   help="same as --group-outputs=engine")),
    (("--group-outputs",), dict(dest="groupby", type=str, choices=GROUPBY, default=None,
                                help="type: all engines' stdout, then stderr, then "
                                     "rich output; engine: each engine's output together; "
                                     "order: like type, with the n-th figure of every "
                                     "engine together")),
    (("-o", "--out", "--save-name"), dict(dest="save_name", type=str,
                                          help="store the AsyncResult under this name "
                                               "in the user namespace")),
)


def _describe_targets(targets) -> str:
    if isinstance(targets, list) and len(targets) > 10:
        return f"{str(targets[:4])[:-1]}, ..., {str(targets[-4:])[1:]}"
    return str(targets)


def parse_targets(text: str, ids: list[int]):
    """A ``--targets`` value: ``all``; an engine id (negative counts from the end); a
    list of ids; or a slice of the live ids (``::2``, ``1:3``)."""
    text = text.strip()
    if text == "all":
        return "all"
    if ":" in text and not text.startswith("["):
        try:
            parts = [int(p) if p.strip() else None for p in text.split(":")]
        except ValueError:
            parts = []
        if 2 <= len(parts) <= 3:
            return ids[slice(*parts)]
    else:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, int) and not isinstance(value, bool):
            return ids[value] if value < 0 and -len(ids) <= value else value
        if isinstance(value, (list, tuple)) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            return list(value)
    raise UsageError(f"--targets {text!r}: expected all, an engine id (0), a list of ids "
                     f"([0, 2]) or a slice of the engine ids (1::2)")


def _parse_signal(text: str):
    """A signal number stays a number; a name goes to the engine, which looks it up."""
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else text


@magics_class
class ParallelMagics(Magics):
    """The magics of one view: ``%px<suffix>``, ``%%px<suffix>``, ``%autopx<suffix>``,
    ``%pxresult<suffix>`` and ``%pxconfig<suffix>`` (and ``%result`` without a suffix).

    ``view`` None (``%load_ext corral``): the first magic used connects to the default
    cluster, unless a client made meanwhile provided a view."""

    def __init__(self, shell, view, suffix=""):
        self.view = view
        self.suffix = suffix
        self.verbose = False
        self.stream_output = not _noninteractive()
        self.progress_after_seconds = 2.0
        self.signal_on_interrupt = "SIGINT"
        #: The AsyncResult of the last %px, for %pxresult.
        self.last_result = None
        self._autopx = None
        px = "px" + suffix
        line = {px: self.px, "pxresult" + suffix: self.result,
                "pxconfig" + suffix: self.pxconfig, "autopx" + suffix: self.autopx}
        if not suffix:
            line["result"] = self.result  # ipyparallel's older name
        self.magics = {"line": line, "cell": {px: self.cell_px}}
        super().__init__(shell=shell)

    # -- the view ----------------------------------------------------------------------

    def _view(self):
        if self.view is None:
            self.view = _connect_default_view()
        return self.view

    # -- %pxconfig, %pxresult ----------------------------------------------------------

    @magic_arguments.magic_arguments()
    @_options(*_EXEC_OPTIONS)
    def pxconfig(self, line=""):
        """Set the defaults of the %px magics: targets, blocking, streaming, verbosity,
        progress bar delay, signal on interrupt."""
        args = magic_arguments.parse_argstring(self.pxconfig, line)
        view = self._view()
        if args.targets:
            view.targets = parse_targets(args.targets, view.client.ids)
        if args.block is not None:
            view.block = args.block
        if args.verbose is not None:
            self.verbose = args.verbose
        if args.stream is not None:
            self.stream_output = args.stream
        if args.progress_after is not None:
            self.progress_after_seconds = args.progress_after
        if args.signal_on_interrupt is not None:
            self.signal_on_interrupt = _parse_signal(args.signal_on_interrupt)

    @magic_arguments.magic_arguments()
    @_options(*_OUTPUT_OPTIONS)
    def result(self, line=""):
        """Show the output of the last %px (waiting for it), for instance of a
        non-blocking one; ``-o name`` stores its AsyncResult as ``name`` instead."""
        args = magic_arguments.parse_argstring(self.result, line)
        if self.last_result is None:
            raise UsageError(NO_LAST_RESULT)
        if args.save_name:
            self.shell.user_ns[args.save_name] = self.last_result
            return
        self.last_result.get()
        self.last_result.display_outputs(groupby=args.groupby or "type")

    # -- %px, %%px ---------------------------------------------------------------------

    @no_var_expand
    def px(self, line=""):
        """Execute one line on the engines, e.g. ``%px import numpy as np``. ``{x}`` is
        left to the engines (f-strings work), not filled in from here."""
        return self.execute(line)

    @magic_arguments.magic_arguments()
    @_options(*_EXEC_OPTIONS)
    @_options(*_OUTPUT_OPTIONS)
    @magic_arguments.argument("--local", action="store_const", const=True, dest="local",
                              help="run the cell here too, after sending it")
    def cell_px(self, line="", cell=None):
        """Execute the cell on the engines. Options change this cell only; %pxconfig
        changes the defaults."""
        args = magic_arguments.parse_argstring(self.cell_px, line)
        view = self._view()
        targets = parse_targets(args.targets, view.client.ids) if args.targets else None
        signal_name = (_parse_signal(args.signal_on_interrupt)
                       if args.signal_on_interrupt else None)
        block = view.block if args.block is None else args.block
        groupby = args.groupby or "type"
        ar = self.execute(
            cell, block=False if args.local else block, groupby=groupby,
            save_name=args.save_name, stream=args.stream, targets=targets,
            progress_after=args.progress_after, signal_on_interrupt=signal_name,
            verbose=args.verbose)
        if args.local:
            self.shell.run_cell(cell)  # here, while the engines run it too
            if block:
                ar.get()
                ar.display_outputs(groupby)
                return None
        return None if block else ar

    def execute(self, code, block=None, groupby="type", save_name=None, stream=None,
                targets=None, progress_after=None, signal_on_interrupt=None, verbose=None):
        """Send ``code`` to the view's engines (``targets`` overrides them for this call);
        blocking: show the output and raise the engines' errors, else return the
        ``AsyncResult``."""
        view = self._view()
        block = view.block if block is None else block
        shown_targets = view.targets if targets is None else targets
        if self.verbose if verbose is None else verbose:
            kind = "Parallel" if block else "Async parallel"
            print(f"{kind} execution on engine(s): {_describe_targets(shown_targets)}")
        ar = view.execute(code, silent=False, targets=targets, block=False)
        ar._fname = "%px"
        self.last_result = ar
        if save_name:
            self.shell.user_ns[save_name] = ar
        if not block:
            return ar
        wait_and_show(
            ar, groupby=groupby,
            stream=self.stream_output if stream is None else stream,
            progress_after=(self.progress_after_seconds if progress_after is None
                            else progress_after),
            signal_on_interrupt=(self.signal_on_interrupt if signal_on_interrupt is None
                                 else signal_on_interrupt))
        return None

    # -- %autopx -----------------------------------------------------------------------

    def autopx(self, line=""):
        """Toggle sending every cell to the engines (until ``%autopx`` again), with the
        view's targets and blocking."""
        if self._autopx is None:
            self._autopx = _AutoPx(self)
            print("%autopx enabled")
        else:
            self._autopx.restore()
            self._autopx = None
            print("%autopx disabled")


def wait_and_show(ar, groupby="type", stream=True, progress_after=2.0,
                  signal_on_interrupt="SIGINT") -> None:
    """The blocking half of ``%px``: wait for ``ar``, showing output as it arrives
    (``stream``) or when done, a progress bar after ``progress_after`` seconds (never if
    negative), then raise the engines' errors. Ctrl-C sends ``signal_on_interrupt`` to
    the engines (None: re-raise instead) and waits for them to finish."""
    # One engine's error is raised as itself, shown once by IPython; several engines'
    # tracebacks are shown as they arrive, and the CompositeError then only counts them.
    live = LiveOutput(ar, show_errors=not ar._single_result) if stream else None
    try:
        _wait_with_progress(ar, live, progress_after)
        try:
            ar.get()
        except error.CompositeError as e:
            if live is not None and live.errors_shown >= len(e.elist):
                raise error.AlreadyDisplayedError(e) from None
            raise  # some errors were not streamed (an engine died): show them all
    except KeyboardInterrupt:
        if signal_on_interrupt is None:
            raise
        print(f"Received Keyboard Interrupt. Sending signal {signal_on_interrupt} to "
              f"engines...", file=sys.stderr)
        ar._client.send_signal(signal_on_interrupt, targets=ar._targets, block=True)
        ar.wait(AFTER_INTERRUPT_SECONDS)
        if live is not None:
            live.show_new()
    finally:
        if live is None:
            # On success and on error alike (output first, then the error); after an
            # interrupt, what arrived so far.
            render_outputs(ar._metadata_list(), ar._single_result, groupby)


def _wait_with_progress(ar, live, progress_after) -> None:
    t0 = time.monotonic()
    bar = None
    try:
        while not ar.wait(POLL_SECONDS):
            if live is not None:
                live.show_new()
            if bar is None and 0 <= progress_after <= time.monotonic() - t0:
                bar = _progress_bar(len(ar), ar._fname, sys.stdout)
            if bar is not None:
                update_progress(bar, ar)
        if bar is not None:
            update_progress(bar, ar)
    finally:
        if bar is not None:
            bar.close()
        if live is not None:
            live.show_new()


class _AutoPx:
    """While ``%autopx`` is on, the shell's own ``run_cell`` still does everything for a
    cell (history, prompt numbers, input transforms) except run it: the raw cell is kept
    on the way in and its parsed body, when the shell comes to run it, is replaced by
    ``%px`` of that raw cell, so magics and ``!`` lines in it run on the engines.
    ``%autopx`` in a cell switches this off."""

    def __init__(self, magics: ParallelMagics):
        self.magics = magics
        self.shell = shell = magics.shell
        self.toggle = re.compile(rf"^\s*%autopx{re.escape(magics.suffix)}\b")
        self.raw_cell = ""
        self.original_run_cell = shell.run_cell
        self.original_run_ast_nodes = shell.run_ast_nodes
        shell.run_cell = self._maybe_async(shell.run_cell, self.run_cell)
        shell.run_ast_nodes = self._maybe_async(shell.run_ast_nodes, self.run_ast_nodes)

    @staticmethod
    def _maybe_async(original, replacement):
        """The replacement, as a coroutine function where the shell awaits one."""
        if not inspect.iscoroutinefunction(original):
            return replacement

        async def awaitable(*args, **kwargs):
            return replacement(*args, **kwargs)
        return awaitable

    def restore(self) -> None:
        self.shell.run_cell = self.original_run_cell
        self.shell.run_ast_nodes = self.original_run_ast_nodes

    def run_cell(self, raw_cell, *args, **kwargs):
        self.raw_cell = raw_cell
        return self.original_run_cell(raw_cell, *args, **kwargs)

    def run_ast_nodes(self, *args, **kwargs) -> bool:
        """Runs the kept cell on the engines; True if it raised (the shell's contract)."""
        if self.toggle.search(self.raw_cell):
            self.magics.autopx()
            return False
        try:
            self.magics.execute(self.raw_cell)
        except Exception:
            self.shell.showtraceback()
            return True
        return False


# -- registration ----------------------------------------------------------------------


def activate_view(view, suffix: str = "") -> None:
    """Register the magics of ``view`` in the running IPython (``view.activate``)."""
    ip = get_ipython()
    if ip is None:
        warnings.warn("The parallel magics (%px, ...) work only inside IPython (a "
                      "notebook, or the ipython command); nothing was activated.",
                      stacklevel=3)
        return
    ip.register_magics(ParallelMagics(ip, view, suffix))


def _registered_px(ip):
    """The corral ParallelMagics behind ``%px`` in ``ip``, if any; (registered, ours)."""
    px = ip.magics_manager.magics["line"].get("px")
    owner = getattr(px, "__self__", None)
    return px is not None, owner if isinstance(owner, ParallelMagics) else None


def activate_first_client(client) -> None:
    """Called for each new client inside IPython: the first one gets the ``%px``
    magics on all its engines (a later one does not take them over); a ``%load_ext
    corral`` that registered them without a view gets this client's."""
    ip = get_ipython()
    if ip is None:
        return
    registered, ours = _registered_px(ip)
    if not registered:
        client.activate()
    elif ours is not None and ours.view is None:
        ours.view = client.direct_view("all")
        ours.view.block = True


def _connect_default_view():
    from corral.client.client import Client

    try:
        client = Client()
    except (OSError, TimeoutError) as e:
        raise UsageError(
            f"%px found no cluster to run on: {e}\nOr connect to one first, e.g. "
            f"rc = corral.Client(profile=...); rc.activate()") from None
    view = client.direct_view("all")
    view.block = True
    return view


def load_ipython_extension(ip) -> None:
    """``%load_ext corral``: register the ``%px`` magics now; they connect to the default
    profile's cluster when first used, unless a client is created before."""
    registered, ours = _registered_px(ip)
    if ours is None:
        ip.register_magics(ParallelMagics(ip, None))
