"""The engine's IPython shell: `execute` code runs through a real `InteractiveShell`, so
`%magics`, `!shell` lines, `get_ipython()`, `display()` and `%matplotlib inline` work as on
an ipyparallel engine.

The shell never touches a socket. Everything it shows leaves through the engine runtime's
`publish` (the Rust I/O thread sends it, parented to the running task), on the topics and
in the shapes a stock engine (ipykernel's ZMQ shell) uses:

- the last expression of a cell: `execute_result` on `engine.<id>.execute_result`;
- `display()`/`clear_output()`: `display_data`/`update_display_data`/`clear_output` on
  `engine.<id>.displaypub`;
- a traceback: `error` on `engine.<id>.error` (the reply carries the same traceback).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from IPython.core import page
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell, InteractiveShellABC
from IPython.core.profiledir import ProfileDir
from traitlets import Any as AnyTrait
from traitlets import Type
from traitlets.config import Config

from corral.engine.jsonmsg import dumps

log = logging.getLogger("corral.engine")


def _flush_streams() -> None:
    """Text printed before a display goes out before it, as in ipykernel."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


class EngineDisplayHook(DisplayHook):
    """The value of a cell's last expression, as `execute_result` with every
    representation the shell's formatter produces (text/plain, text/html, image/png...)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.content: dict | None = None  # the result being built, None outside one

    def start_displayhook(self):
        super().start_displayhook()
        self.content = {"data": {}, "metadata": {}}

    def write_output_prompt(self):
        if self.content is not None:
            self.content["execution_count"] = self.prompt_count

    def write_format_data(self, format_dict, md_dict=None):
        if self.content is not None:
            self.content["data"] = format_dict
            self.content["metadata"] = md_dict or {}

    def finish_displayhook(self):
        content, self.content = self.content, None
        self._is_active = False
        if content is None:
            return
        _flush_streams()
        self.shell.publish("execute_result", "execute_result", content, engine_md=False)


class EngineDisplayPublisher(DisplayPublisher):
    """`display()`, `IPython.display.*` and inline figures, as `display_data`."""

    def publish(self, data, metadata=None, *args, transient=None, update=False, **kwargs):
        _flush_streams()
        metadata = metadata or {}
        self._validate_data(data, metadata)
        content = {"data": data, "metadata": metadata, "transient": transient or {}}
        msg_type = "update_display_data" if update else "display_data"
        self.shell.publish("displaypub", msg_type, content, engine_md=False)

    def clear_output(self, wait=False):
        _flush_streams()
        self.shell.publish("displaypub", "clear_output", {"wait": bool(wait)}, engine_md=False)


class _DataPub:
    """`get_ipython().data_pub.publish_data(d)`, as ipyparallel engines offer it."""

    @staticmethod
    def publish_data(data: dict) -> None:
        from corral.datapub import publish_data

        publish_data(data)


class EngineShell(InteractiveShell):
    """An `InteractiveShell` whose output goes to the engine runtime (see module doc)."""

    displayhook_class = Type(EngineDisplayHook)
    display_pub_class = Type(EngineDisplayPublisher)
    #: The engine runtime (`corral._core.EngineRuntime`); set before the first request.
    rt = AnyTrait(allow_none=True)

    def publish(self, topic: str, msg_type: str, content: dict, engine_md: bool = True) -> None:
        if self.rt is None:  # startup files run before the engine serves: nowhere to send
            log.debug("dropped %s outside a request", msg_type)
            return
        self.rt.publish(topic, msg_type, dumps(content), engine_md=engine_md)

    # -- what differs from a terminal -----------------------------------------------------

    def init_virtualenv(self):
        """The engine runs in the environment it was started in; no warning about it."""

    def init_environment(self):
        # No terminal to page in: subprocesses print instead of waiting on a pager.
        os.environ["PAGER"] = "cat"
        os.environ["GIT_PAGER"] = "cat"

    def init_hooks(self):
        super().init_hooks()
        self.set_hook("show_in_pager", page.as_hook(self._page_as_payload), 99)

    def init_data_pub(self):
        self.data_pub = _DataPub()

    def _page_as_payload(self, strg, start=0, screen_lines=0, pager_cmd=None):
        data = strg if isinstance(strg, dict) else {"text/plain": strg}
        self.payload_manager.write_payload({"source": "page", "data": data, "start": max(0, start)})

    def enable_gui(self, gui=None):
        """Only inline figures: an engine has no GUI event loop to run."""
        if gui not in (None, "inline"):
            raise UsageError(
                f"GUI event loop {gui!r} is not available on an engine; use %matplotlib inline"
            )
        self.active_eventloop = gui

    def ask_exit(self):
        self.exit_now = True
        self.payload_manager.write_payload({"source": "ask_exit", "keepkernel": None})

    def set_next_input(self, text, replace=False):
        self.payload_manager.write_payload(
            {"source": "set_next_input", "text": text, "replace": replace}
        )

    def run_cell(self, *args, **kwargs):
        self._last_traceback = None
        self._traceback_in_displayhook = False
        return super().run_cell(*args, **kwargs)

    def _showtraceback(self, etype, evalue, stb):
        """A traceback becomes the `error` message; the reply repeats it."""
        _flush_streams()
        if getattr(self.displayhook, "content", None) is not None:
            # Formatting the result failed: the request failed too, as in ipykernel.
            self._traceback_in_displayhook = True
        content = {"traceback": stb, "ename": etype.__name__, "evalue": str(evalue)}
        self.publish("error", "error", content)
        self._last_traceback = stb


InteractiveShellABC.register(EngineShell)


def create_shell(user_module, profile_dir: str | Path | None = None,
                 extra_config: dict | None = None) -> EngineShell:
    """The engine's one shell, with `user_module` as its `__main__`. History stays in
    memory (as on ipyparallel engines: many engines, one profile). `extra_config`:
    `{Class: {trait: value}}` from the command line."""
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    config.merge(Config(extra_config or {}))
    kwargs: dict[str, Any] = {"config": config, "user_module": user_module}
    if profile_dir is not None:
        try:
            kwargs["profile_dir"] = ProfileDir.create_profile_dir(str(profile_dir), config)
        except Exception as e:  # an unwritable profile must not stop the engine
            log.warning("profile directory %s not usable (%s); using IPython's default",
                        profile_dir, e)
    return EngineShell.instance(**kwargs)


def run_startup_files(shell: EngineShell) -> None:
    """$PYTHONSTARTUP, then the profile's `startup/*.py` and `*.ipy`, as IPython (and so
    ipengine) runs them. A failing file is reported in the log; the engine serves on."""
    files: list[Path] = []
    env = os.environ.get("PYTHONSTARTUP")
    if env and Path(env).is_file():
        files.append(Path(env))
    startup_dir = Path(shell.profile_dir.startup_dir)
    if startup_dir.is_dir():
        files += sorted(p for p in startup_dir.iterdir() if p.suffix in (".py", ".ipy"))
    for path in files:
        log.info("running startup file %s", path)
        try:
            if path.suffix == ".ipy":
                shell.safe_execfile_ipy(str(path), raise_exceptions=True)
            else:
                shell.safe_execfile(str(path), shell.user_ns, raise_exceptions=True,
                                    shell_futures=False)
        except BaseException as e:
            log.error("startup file %s failed: %s: %s", path, type(e).__name__, e)
