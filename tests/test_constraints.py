"""constraints.txt pins every distribution the package and its train, test and node extras install,
at the version this environment runs (docs/development.md says how to move a pin)."""

from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a constraints file, by canonical name."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"constraints.txt: {line!r} is not an exact pin (name==version)"
        pins[canonicalize_name(name)] = version.strip()
    return pins


def requirement_closure(root: str, extras: set[str]) -> set[str]:
    """Canonical names of every installed distribution ``root[extras]`` requires, directly or
    through another (markers evaluated here: a platform's own wheels count where they apply)."""
    found: dict[str, set[str]] = {}
    stack = [(root, extras)]
    while stack:
        name, wanted = stack.pop()
        for text in metadata.distribution(name).requires or []:
            req = Requirement(text)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in wanted | {""}):
                continue
            key = canonicalize_name(req.name)
            if key in found and set(req.extras) <= found[key]:
                continue
            found[key] = found.get(key, set()) | set(req.extras)
            stack.append((req.name, set(req.extras)))
    return set(found)


def test_closure_follows_extras_and_markers():
    names = requirement_closure("boneage", {"train", "test", "node"})
    assert {"torch", "timm", "pytest", "schemathesis", "onnxruntime", "numpy", "pynetdicom"} <= names
    # torchvision comes through timm, not from boneage itself: the closure is transitive.
    assert "torchvision" in names
    assert "torch" not in requirement_closure("boneage", set())


def test_every_installed_requirement_is_pinned_at_its_version():
    try:
        metadata.distribution("torch")
    except metadata.PackageNotFoundError:
        pytest.skip("the train extra is not installed here: only a full install can be checked")
    pins = read_pins(REPO / "constraints.txt")
    unpinned, moved = [], []
    for name in sorted(requirement_closure("boneage", {"train", "test", "node"})):
        installed = metadata.version(name)
        if name not in pins:
            unpinned.append(f"{name}=={installed}")
        elif pins[name] != installed:
            moved.append(f"{name} pinned {pins[name]}, installed {installed}")
    assert not unpinned, f"not in constraints.txt: {', '.join(unpinned)} (docs/development.md: moving a pin)"
    assert not moved, f"constraints.txt differs from this environment: {'; '.join(moved)}"
