"""The host's calculator: arithmetic the student writes, worked out by the runtime (never by `eval`).

A 135M student copies numbers from a card reliably and multiplies them badly. So, as practical hosts
do, the student writes the calculation and the runtime evaluates it: a completion may hold
`[[expression]]` or `[[name = expression]]`, and `resolve` replaces each with its value, in order,
so that later expressions can use earlier names:

    <think>... [[s = 4 * 80.09 * (1 - 10/100) if 4 >= 2 else 4 * 80.09]] ...</think>
    4 of them come to [[t]] in total.

The language is a small, closed subset of Python's expression grammar, walked node by node from
`ast.parse(mode="eval")`: numbers, names bound earlier in the same completion, `+ - * /`, unary
minus, comparisons, `a if cond else b`, `and`/`or`/`not`, and the functions `round`, `min`, `max`,
`ceil`, `floor`, `abs`. No attribute, subscript, call of anything else or power; at most
`MAX_CHARS` characters and `MAX_NODES` nodes per expression, every constant and result finite and
within `LIMIT`. Money is rounded to cents at every assignment, as `Product.quote` rounds.

Text enters only as the branches of a choice, `[["Red Mug" if a < b else "Blue Mug"]]`: which of
two products is cheaper is a comparison the student gets wrong about half the time when it writes the
name itself, and the runtime gets right. A text value is printed as written; text in arithmetic, a
comparison or a function is an error, and a text constant holds at most `MAX_TEXT` characters of
letters, digits, spaces and `- ' & + . , %` (nothing that could open a block or a markup).

A value prints with two decimals when the expression involves a decimal number, a division or a
name bound to money, unless it rounds with `ceil` or `floor` (a count); else as a whole number. An
expression that does not evaluate (a syntax error, an unknown name, a division by zero, a value out of
bounds) prints as `?`, which no verifier reads as a number: the answer is
then wrong, never a guess. The offline evaluation, GRPO's rewards and `/v1/host/ask` (streamed or
whole) resolve the same way (`resolve`, `CalcStream`).
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable

MAX_CHARS = 240
MAX_TEXT = 80
_TEXT = re.compile(r"[A-Za-z0-9 \-'&+.,%]*")
MAX_NODES = 80
LIMIT = 1e9
UNRESOLVED = "?"
_WHOLE = re.compile(r"\b(ceil|floor)\(")  # a count, printed whole
_ASSIGN = re.compile(r"^\s*([a-z_][a-z0-9_]{0,15})\s*=(?!=)(.*)$", re.S | re.I)
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "round": lambda x, n=0: round(x, int(n)), "min": min, "max": max, "ceil": math.ceil, "floor": math.floor,
    "abs": abs}
_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b}
_COMPARE = {ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b,
            ast.GtE: lambda a, b: a >= b, ast.Eq: lambda a, b: abs(a - b) < 1e-9,
            ast.NotEq: lambda a, b: abs(a - b) >= 1e-9}


class CalcError(ValueError):
    """An expression the calculator does not evaluate, and why."""


def _number(x: float | str) -> float:
    if isinstance(x, str):
        raise CalcError(f"text {x!r} where a number is needed: text is only a choice's result")
    return x


def _finite(x: float | str) -> float:
    x = _number(x)
    if isinstance(x, bool):
        return float(x)
    if not isinstance(x, int | float) or not math.isfinite(x) or abs(x) > LIMIT:
        raise CalcError(f"value {x!r} is out of bounds (finite, |x| <= {LIMIT:g})")
    return float(x)


def evaluate(expression: str, names: dict[str, float | str] | None = None) -> float | str:
    """The value of one expression (see the module docstring), with `names` bound.

    >>> evaluate("4 * 80.09 * (1 - 10/100) if 4 >= 2 else 4 * 80.09")
    288.324
    >>> evaluate("s - 27.00 if s >= 270.00 else s", {"s": 288.32})
    261.32
    >>> evaluate("'Blue Mug' if 9.5 < 12 else 'Red Mug'")
    'Blue Mug'
    >>> evaluate("__import__('os')")
    Traceback (most recent call last):
    ...
    livemind.think.calc.CalcError: call of __import__: only round, min, max, ceil, floor, abs
    """
    if len(expression) > MAX_CHARS:
        raise CalcError(f"expression of {len(expression)} characters; at most {MAX_CHARS}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalcError(f"not an expression: {exc.msg}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalcError(f"expression of more than {MAX_NODES} nodes")
    value = _eval(tree.body, names or {})
    return value if isinstance(value, str) else _finite(value)


def _eval(node: ast.AST, names: dict[str, float | str]) -> float | str:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            if len(node.value) > MAX_TEXT or not _TEXT.fullmatch(node.value):
                raise CalcError(f"text {node.value[:MAX_TEXT]!r}: at most {MAX_TEXT} letters, digits, spaces "
                                "and - ' & + . , %")
            return node.value
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalcError(f"constant {node.value!r}: only numbers and text")
        return _finite(node.value)
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise CalcError(f"unknown name {node.id!r}")
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        a, b = _number(_eval(node.left, names)), _number(_eval(node.right, names))
        if isinstance(node.op, ast.Div) and b == 0:
            raise CalcError("division by zero")
        return _finite(_BINARY[type(node.op)](a, b))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd | ast.Not):
        x = _number(_eval(node.operand, names))
        return float(not x) if isinstance(node.op, ast.Not) else -x if isinstance(node.op, ast.USub) else x
    if isinstance(node, ast.Compare):
        left, ok = _number(_eval(node.left, names)), True
        for op, right_node in zip(node.ops, node.comparators):
            if type(op) not in _COMPARE:
                raise CalcError(f"comparison {type(op).__name__}: only < <= > >= == !=")
            right = _number(_eval(right_node, names))
            ok, left = ok and _COMPARE[type(op)](left, right), right
        return float(ok)
    if isinstance(node, ast.BoolOp):
        vals = [_number(_eval(v, names)) for v in node.values]
        return float(all(vals) if isinstance(node.op, ast.And) else any(vals))
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _number(_eval(node.test, names)) else node.orelse, names)
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
        if name not in _FUNCTIONS or node.keywords:
            raise CalcError(f"call of {name}: only {', '.join(_FUNCTIONS)}")
        args = [_number(_eval(a, names)) for a in node.args]
        try:
            return _finite(_FUNCTIONS[name](*args))
        except TypeError:
            raise CalcError(f"{name} takes other arguments than {len(args)}") from None
    raise CalcError(f"{type(node).__name__} is not allowed")


def _money(expression: str, money_names: set[str]) -> bool:
    """Whether a value prints with cents: a decimal number, a division or a name bound to money in the
    expression, and no `ceil` or `floor` (a count)."""
    if _WHOLE.search(expression):
        return False
    return bool(re.search(r"\d\.\d|/", expression)) or any(
        n in money_names for n in re.findall(r"[a-z_][a-z0-9_]*", expression, re.I))


def resolve(text: str) -> str:
    """`text` with every `[[...]]` block replaced by its value (`?` when it does not evaluate).

    >>> resolve("[[s = 2 * 9.50]] so two are [[s]]; ship in [[1 + 2]] days; [[1 / 0]]")
    '19.00 so two are 19.00; ship in 3 days; ?'
    """
    stream = CalcStream()
    return stream.feed(text) + stream.flush()


class CalcStream:
    """`resolve` over text that arrives in pieces (a streamed answer): text outside a block passes at
    once; a block is held until its `]]` and then replaced by its value."""

    def __init__(self) -> None:
        self.names: dict[str, float | str] = {}
        self.decimal: set[str] = set()  # names bound to money (printed with cents)
        self.held = ""

    def feed(self, piece: str) -> str:
        self.held += piece
        out = []
        while True:
            start = self.held.find("[[")
            if start < 0:
                keep = 1 if self.held.endswith("[") else 0  # a "[[" may be split across pieces
                out.append(self.held[:len(self.held) - keep])
                self.held = self.held[len(self.held) - keep:]
                break
            end = self.held.find("]]", start + 2)
            if end < 0:
                out.append(self.held[:start])
                self.held = self.held[start:]
                if len(self.held) > MAX_CHARS + 4:  # never closed: not a calculation
                    out.append(self.held)
                    self.held = ""
                break
            out.append(self.held[:start] + self.value(self.held[start + 2:end]))
            self.held = self.held[end + 2:]
        return "".join(out)

    def flush(self) -> str:
        """What is still held at the end (an unclosed block stays as written)."""
        out, self.held = self.held, ""
        return out

    def value(self, block: str) -> str:
        m = _ASSIGN.match(block)
        name, expression = (m.group(1), m.group(2)) if m else (None, block)
        try:
            x = evaluate(expression, self.names)
        except CalcError:
            return UNRESOLVED
        if isinstance(x, str):
            if name:
                self.names[name] = x
            return x
        decimal = _money(expression, self.decimal)
        if decimal:
            x = round(x, 2)
        if name:
            self.names[name] = x
            if decimal:
                self.decimal.add(name)
        return f"{x:.2f}" if decimal else f"{x:.0f}" if x == int(x) else f"{x:g}"
