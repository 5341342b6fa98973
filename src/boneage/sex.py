"""Sex, the one encoding used throughout: ``Sex.MALE`` / ``Sex.FEMALE``.

It is a ``str`` enum whose values are the DICOM codes ``"M"`` and ``"F"``, so it prints, compares
and serialises to JSON as those letters; the network sees :attr:`Sex.flag` (1.0 male, 0.0
female). :meth:`Sex.parse` reads every spelling users and label files use.
"""

from __future__ import annotations

from enum import Enum

from boneage.errors import InputError

_MALE = ("m", "male", "true", "1", "t", "yes", "1.0")
_FEMALE = ("f", "female", "false", "0", "no", "0.0")


class Sex(str, Enum):
    MALE = "M"
    FEMALE = "F"

    def __str__(self) -> str:
        return self.value

    @property
    def is_male(self) -> bool:
        return self is Sex.MALE

    @property
    def flag(self) -> float:
        """The network's input: 1.0 for male, 0.0 for female."""
        return 1.0 if self is Sex.MALE else 0.0

    @classmethod
    def parse(cls, value: object, where: str = "") -> "Sex":
        """M/F, male/female, True/False, 1/0 (any case) or a ``Sex``; anything else is an
        :class:`~boneage.errors.InputError` naming the value (and ``where`` it was found)."""
        if isinstance(value, Sex):
            return value
        if isinstance(value, bool):
            return cls.MALE if value else cls.FEMALE
        text = str(value).strip().lower()
        if text in _MALE:
            return cls.MALE
        if text in _FEMALE:
            return cls.FEMALE
        raise InputError(f"sex must be M or F, got {value!r}{where}")

    @classmethod
    def parse_optional(cls, value: object) -> "Sex | None":
        """Like :meth:`parse`, but ``None`` (unknown) stays ``None``."""
        return None if value is None else cls.parse(value)
