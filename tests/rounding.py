"""What the JSON outputs promise: months, years and z-scores to 0.01."""

#: Numbers that are not months, years or z-scores: quality-gate scores, the interval's level.
NOT_MONTHS = ("scores", "level")


def unrounded(obj, path: str = "") -> list[str]:
    """Where ``obj`` (parsed JSON) holds a number with more than two decimals."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() if k not in NOT_MONTHS for p in unrounded(v, f"{path}.{k}")]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in unrounded(v, f"{path}[{i}]")]
    if isinstance(obj, float) and obj != round(obj, 2):
        return [f"{path}={obj!r}"]
    return []
