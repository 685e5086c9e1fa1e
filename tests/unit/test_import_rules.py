"""Every module's "Must not import" rule, and the layers of the package, checked on the source.

A module docstring states what the module must not import (``Must not import: asyncio, redis,
or project modules other than ``balancer.hashing``.``). This test parses that sentence with a
small grammar and checks it against every import in the module's syntax tree (imports under
``if TYPE_CHECKING:`` are not imports at run time and are skipped). A phrase the grammar does not
know fails the test, so the rules cannot drift back into prose that nothing checks. A table of
layers adds the rules between packages (the data path never imports the control plane, …).
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("balancer", "server", "loadgen")
ENTRY_POINTS = {"balancer/__main__.py", "server/__main__.py"}  # they compose everything


@dataclass
class Rule:
    forbidden: set[str] = field(default_factory=set)  # module prefixes
    allowed: set[str] = field(default_factory=set)  # exceptions to a forbidden prefix
    third_party: bool = False  # no package outside the standard library and the project
    module_level_only: bool = False


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


_HEADER = re.compile(r"Must not import( at module level)?( anything from|:)\s*", re.S)
_BACKTICKS = re.compile(r"``([\w.]+)``")


def parse_rule(docstring: str, module: str) -> Rule | None:
    """The rule a docstring states, or None when it states none.

    Raises:
        ValueError: a phrase the grammar does not know.
    """
    found = _HEADER.search(docstring)
    if found is None:
        return None
    rule = Rule(module_level_only=bool(found.group(1)))
    text = re.sub(r"\([^)]*\)", "", docstring[found.end() :])  # (explanations)
    text = _BACKTICKS.sub(lambda m: m.group(1).replace(".", "\0"), text)
    text = re.split(r"[.:](?:\s|$)", " ".join(text.split()), maxsplit=1)[0].replace("\0", ".")
    own_package = module.rpartition(".")[0] if "." in module else module
    for phrase in re.split(r",?\s+(?:or|and)\s+|,\s*", text):
        _apply(rule, phrase.strip(), module, own_package)
    return rule


def _apply(rule: Rule, phrase: str, module: str, own_package: str) -> None:
    top = module.split(".")[0]
    if re.fullmatch(r"(any |other )?project modules?", phrase):
        rule.forbidden.add(top)
    elif m := re.fullmatch(r"project modules other than (?:the pure )?([\w.]+)", phrase):
        rule.forbidden.add(top)
        rule.allowed.add(m.group(1))
    elif m := re.fullmatch(r"(?:project )?modules outside ([\w.]+|this package)", phrase):
        rule.forbidden.add(top)
        rule.allowed.add(own_package if m.group(1) == "this package" else m.group(1))
    elif phrase in {"third-party package", "any third-party package"}:
        rule.third_party = True
    elif phrase == "anything but the standard library":
        rule.third_party = True
        rule.forbidden.update(PACKAGES)
    elif m := re.fullmatch(r"(?:anything from )?([A-Za-z_][\w.]*)", phrase):
        rule.forbidden.add(m.group(1))
    else:
        raise ValueError(f"{module}: unknown phrase in its 'Must not import' rule: {phrase!r}")


def _imports(tree: ast.Module, module: str, *, module_level_only: bool) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module)
            found.append((node.lineno, base))
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
        nested = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        if nested and module_level_only:
            return
        for child in ast.iter_child_nodes(node):
            visit(child, top_level and not nested)

    visit(tree, True)
    return found


def _absolute(node: ast.ImportFrom, module: str) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[: -node.level]
    return ".".join([*base, *([node.module] if node.module else [])])


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(rule: Rule, imports: list[tuple[int, str]], module: str) -> list[str]:
    bad = []
    for line, name in imports:
        if _matches(name, module):
            continue
        forbidden = [p for p in rule.forbidden if _matches(name, p)]
        if forbidden and not any(_matches(name, a) for a in rule.allowed):
            bad.append(f"line {line}: {name}")
        top = name.split(".")[0]
        if rule.third_party and top not in sys.stdlib_module_names and top not in PACKAGES:
            bad.append(f"line {line}: {name} (third-party)")
    return sorted(set(bad))


# A package may not import the packages listed for it (the architecture, checked).
LAYERS: dict[str, tuple[str, ...]] = {
    "balancer.hashing": ("balancer.http", "balancer.state", "balancer.control", "balancer.api",
                         "balancer.runtimes", "balancer.app"),
    "balancer.http": ("balancer.control", "balancer.api", "balancer.runtimes", "balancer.app"),
    "balancer.state": ("balancer.http", "balancer.control", "balancer.api", "balancer.app"),
    "balancer.runtimes": ("balancer.http", "balancer.state", "balancer.control", "balancer.api",
                          "balancer.app"),
    "balancer.control": ("balancer.api", "balancer.app"),
    "balancer.api": ("balancer.app",),
}  # fmt: skip

CASES = [p for p in _modules() if str(p.relative_to(ROOT)) not in ENTRY_POINTS]


@pytest.mark.parametrize("path", CASES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_keeps_its_must_not_import_rule(path: Path) -> None:
    tree = ast.parse(path.read_text())
    module = _name(path)
    docstring = ast.get_docstring(tree) or ""
    rule = parse_rule(docstring, module)
    if rule is None:
        assert path.name == "__init__.py" and len(tree.body) == 1, (
            f"{module}: the docstring must say what the module must not import"
        )
        return
    imports = _imports(tree, module, module_level_only=rule.module_level_only)
    assert violations(rule, imports, module) == []


@pytest.mark.parametrize("path", CASES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_package_imports_only_the_layers_below_it(path: Path) -> None:
    module = _name(path)
    layer = next((pkg for pkg in LAYERS if _matches(module, pkg)), None)
    if layer is None:
        return
    imports = _imports(ast.parse(path.read_text()), module, module_level_only=False)
    rule = Rule(forbidden=set(LAYERS[layer]))
    assert violations(rule, imports, module) == []


@pytest.mark.parametrize(
    ("docstring", "forbidden", "allowed", "third_party"),
    [
        ("Must not import: aiohttp, redis, docker.", {"aiohttp", "redis", "docker"}, set(), False),
        (
            "Must not import: asyncio, or project modules other than the pure ``balancer.hashing``"
            " (for its names).",
            {"asyncio", "balancer"},
            {"balancer.hashing"},
            False,
        ),
        ("Must not import: any project module or third-party package.", {"balancer"}, set(), True),
        (
            "Must not import anything from ``balancer`` or ``server``: it speaks only HTTP.",
            {"balancer", "server"},
            set(),
            False,
        ),
        ("Must not import: redis, or modules outside this package.", {"redis", "balancer"},
         {"balancer.x"}, False),
    ],
)  # fmt: skip
def test_the_rule_grammar(
    docstring: str, forbidden: set[str], allowed: set[str], third_party: bool
) -> None:
    rule = parse_rule(docstring, "balancer.x.y")
    assert rule is not None
    assert (rule.forbidden, rule.allowed, rule.third_party) == (forbidden, allowed, third_party)


def test_an_unknown_phrase_fails_rather_than_passing_silently() -> None:
    with pytest.raises(ValueError, match="unknown phrase"):
        parse_rule("Must not import: redis, whatever the proxy module is called.", "balancer.x")


def test_a_violation_is_found() -> None:
    source = "import asyncio\nfrom balancer.state import keys\nfrom . import sibling\n"
    imports = _imports(ast.parse(source), "balancer.http.x", module_level_only=False)
    rule = parse_rule("Must not import: asyncio, or other project modules.", "balancer.http.x")
    assert rule is not None
    assert violations(rule, imports, "balancer.http.x") == [
        "line 1: asyncio",
        "line 2: balancer.state",
        "line 2: balancer.state.keys",
        "line 3: balancer.http",
        "line 3: balancer.http.sibling",
    ]
