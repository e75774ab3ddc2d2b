"""FQL parser: recursive descent over the token list into evaluate's nodes."""

from typing import Any, NoReturn

from segment_qualtrics.segment.fql.evaluate import (
    Call,
    Comparison,
    Fn,
    Junction,
    List,
    Literal,
    Node,
    Not,
    Path,
    as_condition,
)
from segment_qualtrics.segment.fql.functions import FUNCTIONS, KNOWN_FUNCTIONS
from segment_qualtrics.segment.fql.glob import Glob, glob_regex
from segment_qualtrics.segment.fql.lexer import Token, TriggerSyntaxError, tokenize

MAX_NESTING = 64
_LITERAL_KINDS = frozenset({"string", "number", "true", "false", "null"})
# Tokens that may follow a complete comparison; anything else after a lone value means a missing operator.
_FOLLOWERS = frozenset({"and", "or", ",", ")", "end"})


def _call_fn(name: str, args: list[Node], glob: "Glob | None") -> Fn:
    implementation = FUNCTIONS[name][2]
    if len(args) == 1:
        get = args[0].fn
        return lambda event: implementation(get(event))
    get_first, get_second = args[0].fn, args[1].fn
    if glob is not None:  # match() with a literal pattern: compiled once, here
        matches = glob.matches
        return lambda event: isinstance(text := get_first(event), str) and matches(text)
    return lambda event: implementation(get_first(event), get_second(event))


class Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.index = 0

    def peek(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def fail(self, expected: str, token: Token | None = None) -> NoReturn:
        token = token or self.peek()
        raise TriggerSyntaxError(self.source, token.start, expected, self.describe(token))

    def describe(self, token: Token) -> str:
        if token.kind == "end":
            return "end of input"
        text = self.source[token.start : token.end]
        if token.kind == "string":
            return text if len(text) <= 40 else text[:37] + "..."
        return repr(text if len(text) <= 40 else text[:37] + "...")

    def parse(self) -> Node:
        if self.peek().kind == "end":
            self.fail("a condition")
        node = self.parse_or(0, comma_is_and=True)
        if self.peek().kind != "end":
            self.fail("'and', 'or' or end of input")
        return as_condition(node)

    def nest(self, depth: int, token: Token) -> int:
        if depth >= MAX_NESTING:
            self.fail(f"at most {MAX_NESTING} levels of nesting", token)
        return depth + 1

    def parse_or(self, depth: int, comma_is_and: bool) -> Node:
        operands = [self.parse_and(depth, comma_is_and)]
        while self.peek().kind == "or":
            self.advance()
            operands.append(self.parse_and(depth, comma_is_and))
        return operands[0] if len(operands) == 1 else Junction("or", operands)

    def parse_and(self, depth: int, comma_is_and: bool) -> Node:
        # In function arguments a comma separates arguments, so it only means ``and`` elsewhere.
        words = ("and", ",") if comma_is_and else ("and",)
        operands = [self.parse_not(depth)]
        while self.peek().kind in words:
            self.advance()
            operands.append(self.parse_not(depth))
        return operands[0] if len(operands) == 1 else Junction("and", operands)

    def parse_not(self, depth: int) -> Node:
        if self.peek().kind == "!":
            token = self.advance()
            return Not(token.start, self.parse_not(self.nest(depth, token)))
        return self.parse_comparison(depth)

    def parse_comparison(self, depth: int) -> Node:
        left = self.parse_operand(depth)
        token = self.peek()
        if token.kind == "op" or token.kind == "in":
            self.advance()
            right = self.parse_operand(depth)
            return Comparison(token.value if token.kind == "op" else "in", left, right)
        if token.kind not in _FOLLOWERS:
            self.fail("an operator")
        return left

    def parse_operand(self, depth: int) -> Node:
        token = self.peek()
        kind = token.kind
        if kind in _LITERAL_KINDS:
            self.advance()
            return Literal(token.start, token.end, _literal_value(token))
        if kind == "path":
            if token.plain and self.tokens[self.index + 1].kind == "(":
                return self.parse_call(depth)
            self.advance()
            return Path(token.start, token.end, token.value)
        if kind == "(":
            self.advance()
            inner = self.parse_or(self.nest(depth, token), comma_is_and=True)
            closing = self.peek()
            if closing.kind != ")":
                self.fail("')'")
            self.advance()
            inner.start, inner.end = token.start, closing.end  # the text of a group includes its parentheses
            return inner
        if kind == "[":
            return self.parse_list()
        self.fail("a value")

    def parse_call(self, depth: int) -> Node:
        name_token = self.advance()
        name = name_token.value[0]
        if name not in FUNCTIONS:
            self.fail(f"a known function ({KNOWN_FUNCTIONS})", name_token)
        arity = FUNCTIONS[name][0]
        depth = self.nest(depth, name_token)
        self.advance()  # "("
        plural = "argument" if arity == 1 else "arguments"
        args: list[Node] = []
        while len(args) < arity:
            if args:
                if self.peek().kind != ",":
                    self.fail(f"',' ({name} takes {arity} {plural})")
                self.advance()
            args.append(self.parse_or(depth, comma_is_and=False))
        closing = self.peek()
        if closing.kind != ")":
            self.fail(f"')' ({name} takes {arity} {plural})")
        self.advance()
        glob = None
        if name == "match" and isinstance(args[1], Literal) and isinstance(args[1].value, str):
            regex, problem = glob_regex(args[1].value)
            if regex is None:
                pattern = args[1]
                raise TriggerSyntaxError(self.source, pattern.start, problem, pattern.text(self.source))
            glob = Glob(args[1].value)
        return Call(name_token.start, closing.end, name, args, _call_fn(name, args, glob))

    def parse_list(self) -> Node:
        opening = self.advance()
        values: list[Any] = []
        if self.peek().kind == "]":
            return List(opening.start, self.advance().end, values)
        while True:
            token = self.peek()
            if token.kind not in _LITERAL_KINDS:
                self.fail("a literal (string, number, true, false or null) in the list")
            values.append(_literal_value(self.advance()))
            token = self.advance()
            if token.kind == "]":
                return List(opening.start, token.end, values)
            if token.kind != ",":
                self.fail("',' or ']'", token)


def _literal_value(token: Token) -> Any:
    if token.kind in ("string", "number"):
        return token.value
    return {"true": True, "false": False, "null": None}[token.kind]
