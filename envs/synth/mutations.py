"""Procedural bug injection: AST mutations of functions and methods, applied as text edits.

Each strategy walks the body of every function (and method) of a source file and proposes
sites where a small, realistic bug can be planted. A site is applied by replacing only the
source span of the mutated node, so comments and formatting elsewhere survive and the gold
patch (the reverse diff) stays a few lines long.

Enumeration is deterministic (files sorted, nodes in source order); `select_candidates`
shuffles with a seeded RNG and interleaves strategies, so a seed fixes the candidate list.
"""
from __future__ import annotations

import ast
import copy
import hashlib
import random
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

STRATEGIES = (
    "flip_comparison",  # a < b  → a > b,   a == b → a != b, x in y → x not in y
    "off_by_one",  # a < b  → a <= b,  a >= b → a > b
    "swap_arguments",  # f(a, b) → f(b, a),  a - b → b - a
    "drop_statement",  # a side-effecting statement disappears
    "drop_branch",  # the else/elif branch of an if disappears
    "change_return",  # return True → return False, return n → return n + 1, return x → return None
    "invert_condition",  # if c: → if not c:
    "remove_guard",  # an early `if …: return/raise` disappears
    "break_loop_bound",  # range(n) → range(n - 1), range(a, b) → range(a + 1, b)
)


class MutationError(ValueError):
    """A mutation could not be applied to the text it was computed from."""


@dataclass(frozen=True)
class Mutation:
    """One candidate bug: replace the span [start, end) of `path` with `replacement`."""

    path: str
    function: str  # qualified name, e.g. "Cache.get"
    strategy: str
    line: int
    start: int  # character offsets into the original file text
    end: int
    replacement: str
    description: str  # what was changed, for reports (never shown to the agent)

    @property
    def id(self) -> str:
        key = f"{self.path}:{self.start}:{self.end}:{self.strategy}:{self.replacement}"
        return hashlib.sha256(key.encode()).hexdigest()[:10]

    def apply(self, source: str) -> str:
        mutated = source[: self.start] + self.replacement + source[self.end :]
        try:
            ast.parse(mutated)
        except SyntaxError as exc:
            raise MutationError(f"{self.path}:{self.line}: {self.strategy} makes invalid Python: {exc}") from exc
        return mutated


class _Offsets:
    """(line, UTF-8 byte column) from the ast → character offset into the text."""

    def __init__(self, source: str) -> None:
        self.lines = source.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def at(self, lineno: int, col_bytes: int) -> int:
        line = self.lines[lineno - 1]
        return self.starts[lineno - 1] + len(line.encode("utf-8")[:col_bytes].decode("utf-8", errors="replace"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.at(node.lineno, node.col_offset), self.at(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]

    def line_span(self, first: ast.stmt, last: ast.stmt) -> tuple[int, int] | None:
        """Whole lines from `first` to `last`, if nothing else shares those lines."""
        start, end = self.at(first.lineno, first.col_offset), self.at(last.end_lineno, last.end_col_offset)  # type: ignore[arg-type]
        line_start = self.starts[first.lineno - 1]
        line_end = self.starts[last.end_lineno]  # type: ignore[index]
        before = self.lines[first.lineno - 1][: start - line_start]
        after = self.lines[last.end_lineno - 1][end - self.starts[last.end_lineno - 1] :]  # type: ignore[index, operator]
        if before.strip() or (after.strip() and not after.strip().startswith("#")):
            return None  # `a = 1; b = 2`: other code shares the line
        return line_start, line_end

    def indent_of(self, node: ast.stmt) -> str:
        line = self.lines[node.lineno - 1]
        return line[: len(line) - len(line.lstrip())]


@dataclass
class _Ctx:
    path: str
    source: str
    offsets: _Offsets
    function: str


def _expr_mutation(ctx: _Ctx, strategy: str, node: ast.expr, new: ast.expr, what: str) -> Mutation:
    start, end = ctx.offsets.span(node)
    text = ast.unparse(new)
    return Mutation(ctx.path, ctx.function, strategy, node.lineno, start, end, text, what)


def _remove_stmts(ctx: _Ctx, strategy: str, body: list[ast.stmt], index: int, what: str) -> Mutation | None:
    node = body[index]
    span = ctx.offsets.line_span(node, node)
    if span is None:
        return None
    replacement = "" if len(body) > 1 else ctx.offsets.indent_of(node) + "pass\n"
    return Mutation(ctx.path, ctx.function, strategy, node.lineno, span[0], span[1], replacement, what)


_FLIP = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE, ast.Eq: ast.NotEq,
         ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_BOUNDARY = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
# isinstance(str, x) is a TypeError on every call: a crash, not the kind of bug a person writes.
_TYPE_CHECKS = {"isinstance", "issubclass"}
_NON_COMMUTATIVE = (ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)


def _replace_op(node: ast.Compare, table: Mapping[type, type]) -> ast.Compare | None:
    if len(node.ops) != 1 or type(node.ops[0]) not in table:
        return None
    new = copy.deepcopy(node)
    new.ops = [table[type(node.ops[0])]()]
    return new


def _flip_comparison(ctx: _Ctx, node: ast.AST) -> Iterator[Mutation]:
    if isinstance(node, ast.Compare) and (new := _replace_op(node, _FLIP)):
        yield _expr_mutation(ctx, "flip_comparison", node, new, f"flipped comparison `{ast.unparse(node)}`")


def _off_by_one(ctx: _Ctx, node: ast.AST) -> Iterator[Mutation]:
    if isinstance(node, ast.Compare) and (new := _replace_op(node, _BOUNDARY)):
        yield _expr_mutation(ctx, "off_by_one", node, new, f"moved the boundary of `{ast.unparse(node)}`")


def _swap_arguments(ctx: _Ctx, node: ast.AST) -> Iterator[Mutation]:
    if (isinstance(node, ast.Call) and len(node.args) >= 2 and not any(isinstance(a, ast.Starred) for a in node.args[:2])
            and ast.unparse(node.func) not in _TYPE_CHECKS):
        if ast.dump(node.args[0]) != ast.dump(node.args[1]):
            new = copy.deepcopy(node)
            new.args[0], new.args[1] = new.args[1], new.args[0]
            yield _expr_mutation(ctx, "swap_arguments", node, new, f"swapped the first two arguments of `{ast.unparse(node.func)}`")
    elif isinstance(node, ast.BinOp) and isinstance(node.op, _NON_COMMUTATIVE):
        if ast.dump(node.left) != ast.dump(node.right):
            new = ast.BinOp(left=copy.deepcopy(node.right), op=node.op, right=copy.deepcopy(node.left))
            yield _expr_mutation(ctx, "swap_arguments", node, new, f"swapped the operands of `{ast.unparse(node)}`")


def _is_side_effect(stmt: ast.stmt) -> bool:
    # Dropping `x = …` mostly causes a NameError, a crash rather than a bug; these are subtler.
    if isinstance(stmt, ast.Expr):
        return isinstance(stmt.value, ast.Call)
    if isinstance(stmt, ast.AugAssign):
        return True
    if isinstance(stmt, ast.Assign):
        return all(isinstance(t, (ast.Attribute, ast.Subscript)) for t in stmt.targets)
    return False


def _drop_statement(ctx: _Ctx, node: ast.AST) -> Iterator[Mutation]:
    for body in _bodies(node):
        for i, stmt in enumerate(body):
            if _is_side_effect(stmt):
                m = _remove_stmts(ctx, "drop_statement", body, i, f"dropped `{ast.unparse(stmt)[:80]}`")
                if m:
                    yield m


def _drop_branch(ctx: _Ctx, node: ast.AST) -> Iterator[Mutation]:
    """Cut the lines from `else:`/`elif …:` to the end of the if-statement."""
    if not (isinstance(node, ast.If) and node.orelse):
        return
    lines = ctx.offsets.lines
    keyword_line = None
    for lineno in range(node.body[-1].end_lineno + 1, node.orelse[0].lineno + 1):  # type: ignore[operator]
        if lines[lineno - 1].lstrip().startswith(("else", "elif")):
            keyword_line = lineno
            break
    last = node.orelse[-1]
    if keyword_line is None or lines[last.end_lineno - 1][ctx.offsets.at(last.end_lineno, last.end_col_offset)  # type: ignore[index, arg-type]
                                                           - ctx.offsets.starts[last.end_lineno - 1]:].strip():  # type: ignore[index, operator]
        return
    start, end = ctx.offsets.starts[keyword_line - 1], ctx.offsets.starts[last.end_lineno]  # type: ignore[index]
    kind = "elif" if lines[keyword_line - 1].lstrip().startswith("elif") else "else"
    yield Mutation(ctx.path, ctx.function, "drop_branch", keyword_line, start, end, "",
                   f"dropped the {kind} branch of `if {ast.unparse(node.test)[:80]}`")


def _changed_value(value: ast.expr | None) -> ast.expr | None:
    if isinstance(value, ast.Constant):
        v = value.value
        if isinstance(v, bool):
            return ast.Constant(not v)
        if isinstance(v, int):
            return ast.Constant(v + 1)
        if isinstance(v, str) and v:
            return ast.Constant("")
        return None
    if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.Not):
        return copy.deepcopy(value.operand)
    if isinstance(value, (ast.Name, ast.Attribute, ast.Call, ast.BinOp, ast.Subscript, ast.Compare, ast.BoolOp)):
        if isinstance(value, (ast.Compare, ast.BoolOp)):
            return ast.UnaryOp(op=ast.Not(), operand=copy.deepcopy(value))
        return ast.Constant(None)
    return None


def _change_return(ctx: _Ctx, node: ast.AST) -> Iterator[Mutation]:
    if isinstance(node, ast.Return) and node.value is not None:
        new_value = _changed_value(node.value)
        if new_value is not None:
            yield _expr_mutation(ctx, "change_return", node.value, new_value, f"changed the value of `{ast.unparse(node)[:80]}`")


def _invert_condition(ctx: _Ctx, node: ast.AST) -> Iterator[Mutation]:
    if isinstance(node, (ast.If, ast.While, ast.IfExp)):
        test = node.test
        new = copy.deepcopy(test.operand) if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) \
            else ast.UnaryOp(op=ast.Not(), operand=copy.deepcopy(test))
        yield _expr_mutation(ctx, "invert_condition", test, new, f"inverted the condition `{ast.unparse(test)[:80]}`")


def _is_guard(stmt: ast.stmt) -> bool:
    return (isinstance(stmt, ast.If) and not stmt.orelse and len(stmt.body) <= 2
            and isinstance(stmt.body[-1], (ast.Return, ast.Raise, ast.Continue, ast.Break)))


def _remove_guard(ctx: _Ctx, node: ast.AST) -> Iterator[Mutation]:
    for body in _bodies(node):
        for i, stmt in enumerate(body):
            if _is_guard(stmt) and i < len(body) - 1:  # a guard is followed by the code it protects
                span = ctx.offsets.line_span(stmt, stmt)
                if span:
                    yield Mutation(ctx.path, ctx.function, "remove_guard", stmt.lineno, span[0], span[1], "",
                                   f"removed the guard `if {ast.unparse(stmt.test)[:80]}`")


def _break_loop_bound(ctx: _Ctx, node: ast.AST) -> Iterator[Mutation]:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"):
        return
    if not node.args or len(node.args) > 3 or any(isinstance(a, ast.Starred) for a in node.args):
        return
    new = copy.deepcopy(node)
    if len(node.args) == 1:
        new.args[0] = ast.BinOp(left=new.args[0], op=ast.Sub(), right=ast.Constant(1))
        what = "stops the range one early"
    else:
        new.args[0] = ast.BinOp(left=new.args[0], op=ast.Add(), right=ast.Constant(1))
        what = "starts the range one late"
    yield _expr_mutation(ctx, "break_loop_bound", node, new, f"{what}: `{ast.unparse(node)}`")


def _bodies(node: ast.AST) -> Iterator[list[ast.stmt]]:
    for name in ("body", "orelse", "finalbody"):
        body = getattr(node, name, None)
        if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
            yield body


_STRATEGY_FUNCS: dict[str, Callable[[_Ctx, ast.AST], Iterator[Mutation]]] = {
    "flip_comparison": _flip_comparison,
    "off_by_one": _off_by_one,
    "swap_arguments": _swap_arguments,
    "drop_statement": _drop_statement,
    "drop_branch": _drop_branch,
    "change_return": _change_return,
    "invert_condition": _invert_condition,
    "remove_guard": _remove_guard,
    "break_loop_bound": _break_loop_bound,
}


def check_strategies(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in _STRATEGY_FUNCS]
    if unknown:
        raise ValueError(f"unknown mutation strategies {unknown}; known: {', '.join(STRATEGIES)}")
    return list(dict.fromkeys(names))


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qual = f"{prefix}{child.name}"
                yield qual, child
                yield from walk(child, f"{qual}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")

    yield from walk(tree, "")


def _nodes_in(func: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[ast.AST]:
    """The function, then its body's nodes in source order, not descending into nested defs/classes.

    The function itself comes first because statement-list strategies look at `node.body`.
    """
    yield func
    stack: list[ast.AST] = list(reversed(func.body))
    while stack:
        node = stack.pop()
        yield node
        children = [c for c in ast.iter_child_nodes(node)
                    if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))]
        stack.extend(reversed(children))


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def enumerate_mutations(path: str, source: str, strategies: Sequence[str] = STRATEGIES) -> list[Mutation]:
    """Every candidate mutation of every function in one file, in source order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # a file Python cannot parse cannot be mutated; the test run will say more
    offsets = _Offsets(source)
    funcs = [_STRATEGY_FUNCS[s] for s in check_strategies(strategies)]
    found: list[Mutation] = []
    seen: set[tuple[int, int, str]] = set()
    for qualname, func in _functions(tree):
        ctx = _Ctx(path, source, offsets, qualname)
        for node in _nodes_in(func):
            if _is_docstring(node):
                continue
            for strategy in funcs:
                for m in strategy(ctx, node):
                    key = (m.start, m.end, m.replacement)
                    if key in seen or source[m.start:m.end] == m.replacement:
                        continue
                    try:
                        m.apply(source)
                    except MutationError:
                        continue
                    seen.add(key)
                    found.append(m)
    return found


def select_candidates(mutations: Sequence[Mutation], seed: int, limit: int | None = None) -> list[Mutation]:
    """A seeded shuffle, interleaved across strategies so no one strategy crowds out the rest."""
    rng = random.Random(seed)
    by_strategy: dict[str, list[Mutation]] = {}
    for m in sorted(mutations, key=lambda m: (m.strategy, m.path, m.start, m.end, m.replacement)):
        by_strategy.setdefault(m.strategy, []).append(m)
    for group in by_strategy.values():
        rng.shuffle(group)
    order = sorted(by_strategy)
    rng.shuffle(order)
    picked: list[Mutation] = []
    while any(by_strategy.values()) and (limit is None or len(picked) < limit):
        for name in order:
            if by_strategy[name] and (limit is None or len(picked) < limit):
                picked.append(by_strategy[name].pop())
    return picked
