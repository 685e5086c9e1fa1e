"""A small PromQL parser for checking dashboard queries: an AST of the expressions dashboards
write, and the labels each expression's result carries.

Owns ``parse`` (text to ``Node``), ``walk`` (every node with its ancestors) and ``output_labels``.
It covers selectors with matchers and ranges, subqueries, ``offset``, function calls,
aggregations (``by``/``without`` before or after the arguments, a parameter for ``topk`` and
friends), binary operators at PromQL's precedence with ``bool``, ``on``/``ignoring`` and
``group_left``/``group_right``, and Grafana's variables (``$var``, ``${var}``) where a number
goes; inside ``[...]`` a range is kept as text (so ``[$__rate_interval]`` parses). It validates
nothing Prometheus would not: promtool and the live Prometheus test remain the authority.
Must not import: anything from ``balancer`` or ``server``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
     "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)  # fmt: skip
_PARAMETRIC = frozenset({"count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"})
# Binary operators by precedence, lowest first; `^` is right-associative.
_PRECEDENCE = {"or": 1, "and": 2, "unless": 2, "==": 3, "!=": 3, "<=": 3, "<": 3, ">=": 3,
               ">": 3, "+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "atan2": 5, "^": 6}  # fmt: skip
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<range>\[[^\[\]]*\])
    | (?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)
    | (?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<variable>\$\{\w+\}|\$\w+)
    | (?P<ident>[a-zA-Z_:][\w:]*)
    | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(){},@])
    )""",
    re.VERBOSE,
)


class PromQLSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str  # without its quotes


@dataclass(frozen=True)
class Selector:
    name: str | None
    matchers: tuple[Matcher, ...]
    range: str | None = None


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Aggregation:
    op: str
    expr: Node
    grouping: tuple[str, ...] | None = None  # None: no by/without clause
    without: bool = False
    param: Node | None = None


@dataclass(frozen=True)
class Binary:
    op: str
    lhs: Node
    rhs: Node
    matching: tuple[str, ...] | None = None  # the on/ignoring list
    ignoring: bool = False
    group: str | None = None  # "left", "right"
    include: tuple[str, ...] = ()


@dataclass(frozen=True)
class Subquery:
    expr: Node
    range: str


@dataclass(frozen=True)
class Scalar:
    text: str  # a number, a string literal or a dashboard variable


Node = Selector | Call | Aggregation | Binary | Subquery | Scalar


def _tokens(text: str) -> list[tuple[str, str]]:
    found, pos = [], 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise PromQLSyntaxError(f"cannot read {text[pos:]!r}")
        kind = m.lastgroup or ""
        found.append((kind, m.group(kind)))
        pos = m.end()
    return found


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise PromQLSyntaxError(f"unexpected end, wanted {expected or 'more'}")
        kind, text = self.tokens[self.pos]
        if expected is not None and text != expected:
            raise PromQLSyntaxError(f"wanted {expected!r}, found {text!r}")
        self.pos += 1
        return kind, text

    def expr(self, min_prec: int = 1) -> Node:
        lhs = self.unary()
        while (op := self.peek()) in _PRECEDENCE and _PRECEDENCE[op] >= min_prec:
            self.take()
            if self.peek() == "bool":
                self.take()
            matching, ignoring, group, include = self.vector_matching()
            right_assoc = op == "^"
            rhs = self.expr(_PRECEDENCE[op] + (0 if right_assoc else 1))
            lhs = Binary(op, lhs, rhs, matching, ignoring, group, include)
        return lhs

    def vector_matching(self) -> tuple[tuple[str, ...] | None, bool, str | None, tuple[str, ...]]:
        matching: tuple[str, ...] | None = None
        ignoring, group, include = False, None, tuple[str, ...]()
        if self.peek() in ("on", "ignoring"):
            ignoring = self.take()[1] == "ignoring"
            matching = self.labels()
        if self.peek() in ("group_left", "group_right"):
            group = self.take()[1].removeprefix("group_")
            include = self.labels() if self.peek() == "(" else ()
        return matching, ignoring, group, include

    def labels(self) -> tuple[str, ...]:
        self.take("(")
        names = []
        while self.peek() != ")":
            names.append(self.take()[1])
            if self.peek() == ",":
                self.take()
        self.take(")")
        return tuple(names)

    def unary(self) -> Node:
        if self.peek() in ("-", "+"):
            self.take()
            return self.unary()
        node = self.primary()
        while self.peek() is not None and self.tokens[self.pos][0] == "range":
            text = self.take()[1][1:-1].strip()
            node = (
                Selector(node.name, node.matchers, text)
                if isinstance(node, Selector) and node.range is None and ":" not in text
                else Subquery(node, text)
            )
        if self.peek() == "offset":
            self.take()
            if self.peek() == "-":
                self.take()
            self.take()  # the duration
        return node

    def primary(self) -> Node:
        kind, text = self.take()
        if kind in ("number", "string", "variable", "duration"):
            return Scalar(text)
        if text == "(":
            inner = self.expr()
            self.take(")")
            return inner
        if text == "{":
            return Selector(None, self.matchers())
        if kind != "ident":
            raise PromQLSyntaxError(f"unexpected {text!r}")
        if text.lower() in ("inf", "nan"):
            return Scalar(text)
        if text in AGGREGATIONS and self.peek() in ("(", "by", "without"):
            return self.aggregation(text)
        if self.peek() == "(":
            return Call(text, self.arguments())
        matchers: tuple[Matcher, ...] = ()
        if self.peek() == "{":
            self.take()
            matchers = self.matchers()
        return Selector(text, matchers)

    def matchers(self) -> tuple[Matcher, ...]:
        found = []
        while self.peek() != "}":
            label = self.take()[1]
            op = self.take()[1]
            value = self.take()[1]
            found.append(Matcher(label, op, value[1:-1]))
            if self.peek() == ",":
                self.take()
        self.take("}")
        return tuple(found)

    def arguments(self) -> tuple[Node, ...]:
        self.take("(")
        args = []
        while self.peek() != ")":
            args.append(self.expr())
            if self.peek() == ",":
                self.take()
        self.take(")")
        return tuple(args)

    def aggregation(self, op: str) -> Aggregation:
        grouping, without = None, False
        if self.peek() in ("by", "without"):
            without = self.take()[1] == "without"
            grouping = self.labels()
        args = self.arguments()
        if grouping is None and self.peek() in ("by", "without"):
            without = self.take()[1] == "without"
            grouping = self.labels()
        param = args[0] if op in _PARAMETRIC and len(args) == 2 else None
        if len(args) != (2 if param is not None else 1):
            raise PromQLSyntaxError(f"{op} takes {'2' if op in _PARAMETRIC else '1'} arguments")
        return Aggregation(op, args[-1], grouping, without, param)


def parse(text: str) -> Node:
    """The AST of one PromQL expression. Raises PromQLSyntaxError."""
    parser = _Parser(text)
    node = parser.expr()
    if parser.peek() is not None:
        raise PromQLSyntaxError(f"unexpected {parser.peek()!r} after a whole expression")
    return node


def children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Aggregation):
        return (node.expr,) if node.param is None else (node.param, node.expr)
    if isinstance(node, Binary):
        return (node.lhs, node.rhs)
    if isinstance(node, Subquery):
        return (node.expr,)
    return ()


def walk(node: Node, ancestors: tuple[Node, ...] = ()) -> Iterator[tuple[Node, tuple[Node, ...]]]:
    """Every node under ``node`` (itself first), each with its ancestors, nearest last."""
    yield node, ancestors
    for child in children(node):
        yield from walk(child, (*ancestors, node))


# Functions whose result keeps no labels, and those that keep the labels of their vector
# argument (every other function does that too, except those named here).
_NO_LABELS = frozenset({"time", "vector", "scalar", "pi", "day_of_month", "day_of_week", "year",
                        "day_of_year", "days_in_month", "hour", "minute", "month"})  # fmt: skip


def output_labels(node: Node, labels_of: Callable[[str | None], frozenset[str]]) -> frozenset[str]:
    """The labels the result of ``node`` can carry, given each selected series' labels."""
    if isinstance(node, Selector):
        return labels_of(node.name)
    if isinstance(node, Scalar):
        return frozenset()
    if isinstance(node, Subquery):
        return output_labels(node.expr, labels_of)
    if isinstance(node, Aggregation):
        inner = output_labels(node.expr, labels_of)
        if node.op in ("topk", "bottomk", "limitk", "limit_ratio"):
            return inner
        extra = {node.param.text.strip("\"'`")} if node.op == "count_values" and isinstance(
            node.param, Scalar) else set()  # fmt: skip
        kept = frozenset() if node.grouping is None else frozenset(node.grouping)
        return (inner - kept if node.without else kept) | extra
    if isinstance(node, Binary):
        return _binary_labels(node, labels_of)
    return _call_labels(node, labels_of)


def _binary_labels(
    node: Binary, labels_of: Callable[[str | None], frozenset[str]]
) -> frozenset[str]:
    lhs, rhs = output_labels(node.lhs, labels_of), output_labels(node.rhs, labels_of)
    if node.op == "or":
        return lhs | rhs
    if isinstance(node.lhs, Scalar):
        return rhs
    if isinstance(node.rhs, Scalar) or node.op in ("and", "unless"):
        return lhs
    if node.group == "right":
        return rhs | frozenset(node.include)
    if node.group == "left":
        return lhs | frozenset(node.include)
    if node.matching is not None and not node.ignoring:
        return frozenset(node.matching)  # one-to-one `on (…)` keeps only the listed labels
    return lhs


def _call_labels(node: Call, labels_of: Callable[[str | None], frozenset[str]]) -> frozenset[str]:
    if node.func in _NO_LABELS or not node.args:
        return frozenset()
    if node.func == "histogram_quantile":
        return output_labels(node.args[1], labels_of) - {"le"}
    if node.func in ("label_replace", "label_join"):
        target = node.args[1]
        added = {target.text.strip("\"'`")} if isinstance(target, Scalar) else set()
        return output_labels(node.args[0], labels_of) | added
    if node.func in ("absent", "absent_over_time"):
        arg = node.args[0]
        if isinstance(arg, Selector):
            return frozenset(m.label for m in arg.matchers if m.op == "=")
        return frozenset()
    vectors = [a for a in node.args if not isinstance(a, Scalar)]
    return output_labels(vectors[0], labels_of) if vectors else frozenset()
