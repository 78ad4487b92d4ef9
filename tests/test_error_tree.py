"""botkit/errors.py's docstring draws every exception class of the four packages, each under
its real parent and beside its real module; this test keeps the drawing true."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import re

import botkit.errors

PACKAGES = ("botkit", "connectors", "knowledge", "training")
ROOT = pathlib.Path(__file__).resolve().parent.parent
LINE = re.compile(r"^    (?P<lead>[ │├└─]*?)(?P<name>[A-Za-z_]\w*)\s+"
                  r"(?P<module>(?:botkit|connectors|knowledge|training)(?:\.\w+)*)\s")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__main__":
                continue  # running it is the CLI, not an import
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join(parts))
    return names


def _defined() -> dict[str, type[BaseException]]:
    """Every BaseException subclass defined (not just imported) at the top of a module."""
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name:
                assert obj.__qualname__ not in found, f"two exception classes named {obj.__qualname__}"
                found[obj.__qualname__] = obj
    return found


def _drawn() -> dict[str, tuple[str, str | None]]:
    """name -> (module, parent drawn above it in the tree, None at the top level)."""
    drawn: dict[str, tuple[str, str | None]] = {}
    stack: list[tuple[int, str]] = []
    for line in (botkit.errors.__doc__ or "").splitlines():
        m = LINE.match(line)
        if not m:
            stack = [] if not line.strip() else stack
            continue
        depth = len(m["lead"])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1] if stack and "─" in m["lead"] else None
        assert m["name"] not in drawn, f"{m['name']} is drawn twice"
        drawn[m["name"]] = (m["module"], parent)
        stack.append((depth, m["name"]))
    return drawn


def test_every_exception_class_is_drawn_with_its_module() -> None:
    defined, drawn = _defined(), _drawn()
    missing = sorted(set(defined) - set(drawn))
    assert not missing, f"add these to the tree in botkit/errors.py's docstring: {missing}"
    unknown = sorted(set(drawn) - set(defined))
    assert not unknown, f"the tree names classes that do not exist: {unknown}"
    for name, (module, _parent) in drawn.items():
        assert defined[name].__module__ == module, f"{name} is defined in {defined[name].__module__}, not {module}"


def test_the_tree_shows_each_class_under_its_parent() -> None:
    defined, drawn = _defined(), _drawn()
    for name, (_module, parent) in drawn.items():
        cls = defined[name]
        if parent is None:
            assert cls is botkit.errors.BotkitError or not issubclass(cls, botkit.errors.BotkitError), \
                f"{name} is a BotkitError: draw it under its parent"
        else:
            assert cls.__base__ is defined[parent], f"{name} derives from {cls.__base__.__name__}, not {parent}"


def test_user_facing_errors_are_botkit_errors() -> None:
    # Only private classes and the three caught-where-raised control-flow exceptions stay outside.
    outside = {n for n, c in _defined().items() if not issubclass(c, botkit.errors.BotkitError)}
    assert {n for n in outside if not n.startswith("_")} == {"Refused", "RequestBodyTimeout", "ProtocolError"}
