"""The argument types of the child's dates and age (``predict``, ``report``).

Apart from :mod:`boneage.cli.common` because they need :mod:`boneage.clinical`, which imports
matplotlib: only the commands whose parsers take a date or an age import this module.
"""

from __future__ import annotations

import argparse
import datetime

from boneage.clinical import check_age_months, parse_date
from boneage.errors import InputError


def calendar_date(text: str) -> datetime.date:
    """A date given as YYYY-MM-DD or YYYYMMDD (argparse ``type``)."""
    try:
        return parse_date(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def age_months(text: str) -> float:
    """A chronological age in months, 0-240 (argparse ``type``)."""
    try:
        return check_age_months(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
