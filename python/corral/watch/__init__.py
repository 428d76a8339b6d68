"""`corral watch`: follow a task's published data, or the cluster, live in a terminal.

``model`` reads what to show through the client (any task by msg_id, via
``Client.get_result``; engines via ``queue_status``), ``render`` draws it with rich or as
plain lines, ``command`` parses the options and runs the refresh loop.
"""

from corral.watch.command import main

__all__ = ["main"]
