"""``boneage dicom-node``: the DICOM node (see :mod:`boneage.dicomnode`), and its ``--status``.

One of the commands of the light install (no PyTorch). :func:`add_arguments` fills its
parser, :func:`run` runs it (:mod:`boneage.cli.main` dispatches to both). Every setting of
:data:`boneage.dicomnode.settings.SETTINGS` is an option here and a key of the ``--config``
file; given both ways, the command line wins.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading

from boneage.dicomnode.settings import SETTINGS, resolve_settings
from boneage.dicomnode.spool import Spool, format_status
from boneage.errors import InputError


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the arguments of ``dicom-node`` (every node setting, ``--status``) to its parser ``s``."""
    s.add_argument("--config", metavar="FILE.yaml",
                   help="settings file (YAML, the option names with underscores); the command line wins")
    for setting in SETTINGS:
        if setting.is_flag:
            s.add_argument(setting.option, dest=setting.name, action=argparse.BooleanOptionalAction,
                           default=None, help=f"{setting.help} (default: {setting.default})")
        else:
            default = setting.default_text or ("none" if setting.default is None else setting.default)
            s.add_argument(setting.option, dest=setting.name, metavar=setting.metavar, default=None,
                           help=f"{setting.help} (default: {default})")
    s.add_argument("--status", action="store_true",
                   help="say what the spool holds (queued, in progress, failed) by SOP Instance UID, and exit")
    s.add_argument("--json", action="store_true", help="with --status: as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the node until SIGINT or SIGTERM (0 on a clean stop), or print ``--status``."""
    try:
        # boundary: pynetdicom is the optional `node` extra; here, not at the top, so that
        # `boneage dicom-node --help` works without it and its absence is told in one line.
        from boneage.dicomnode.node import DicomNode
    except ModuleNotFoundError as exc:
        if exc.name != "pynetdicom":
            raise
        raise InputError("the DICOM node needs pynetdicom, which this installation lacks "
                         "(pip install -c constraints.txt '.[node]')") from None

    settings = resolve_settings(args.config, {s.name: getattr(args, s.name) for s in SETTINGS})
    if args.status:
        spool = Spool(settings.require("spool").spool)
        status = spool.status()
        print(json.dumps(status, indent=2) if args.json else format_status(status, spool.root))
        return 0
    # The node logs every failed association itself, in one line; pynetdicom's own lines
    # about it would repeat that on every retry.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with DicomNode(settings):
            while not stop.wait(0.5):  # a timed wait lets the signal handlers run promptly
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
