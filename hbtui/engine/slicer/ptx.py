"""PTX module structure: top-level directives, functions, parameter lists, bodies.

The parser keeps source offsets on everything so the rewriter can splice edits into
the original text and leave every byte it does not own untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .lexer import PtxParseError, Token, tokenize

# Directives that end at the end of their line rather than at `;`.
_LINE_DIRECTIVES = {".version", ".target", ".address_size", ".file", ".loc"}


@dataclass(slots=True)
class Param:
    name: str
    tokens: list[Token]

    @property
    def end(self) -> int:
        return self.tokens[-1].end


@dataclass(slots=True)
class Statement:
    """One instruction or directive inside a body, without its `;`."""

    tokens: list[Token]

    @property
    def line(self) -> int:
        return self.tokens[0].line

    @property
    def opcode_index(self) -> int:
        """Index of the opcode, past an optional guard predicate (`@%p1`, `@!%p1`)."""
        i = 0
        if self.tokens[0].text == "@":
            i = 1
            while i < len(self.tokens) and self.tokens[i].text == "!":
                i += 1
            i += 1
        return i

    @property
    def opcode(self) -> str:
        i = self.opcode_index
        return self.tokens[i].text if i < len(self.tokens) else ""

    @property
    def operands(self) -> list[Token]:
        return self.tokens[self.opcode_index + 1 :]

    def text(self) -> str:
        return " ".join(t.text for t in self.tokens)


@dataclass(slots=True)
class Function:
    kind: str  # "entry" or "func"
    name: str
    name_token: Token
    qualifiers: list[str]  # e.g. [".visible"], [".extern"], [".weak"]
    params: list[Param]
    params_open: Token | None  # the `(` of the parameter list, None if absent
    params_close: Token | None
    directives: list[tuple[str, list[str]]]  # performance tuning directives
    body_open: Token | None  # None for a prototype (declaration only)
    body_close: Token | None
    statements: list[Statement] = field(default_factory=list)
    body_tokens: list[Token] = field(default_factory=list)

    @property
    def is_definition(self) -> bool:
        return self.body_open is not None

    def directive(self, name: str) -> list[str] | None:
        for d, args in self.directives:
            if d == name:
                return args
        return None


@dataclass(slots=True)
class Module:
    text: str
    tokens: list[Token]
    functions: list[Function]
    target: list[str]

    def entries(self) -> list[Function]:
        return [f for f in self.functions if f.kind == "entry" and f.is_definition]

    def func_definitions(self) -> dict[str, Function]:
        return {f.name: f for f in self.functions if f.kind == "func" and f.is_definition}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.all_tokens = tokenize(text)
        # Structure is parsed without comments; newlines matter only for line directives.
        self.toks = [t for t in self.all_tokens if t.kind != "comment"]
        self.i = 0

    def error(self, tok: Token | None, msg: str) -> PtxParseError:
        line = tok.line if tok else (self.toks[-1].line if self.toks else 1)
        return PtxParseError(f"line {line}: {msg}")

    def _skip_nl(self) -> None:
        while self.i < len(self.toks) and self.toks[self.i].kind == "nl":
            self.i += 1

    def peek(self) -> Token | None:
        self._skip_nl()
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise self.error(None, "unexpected end of input")
        self.i += 1
        return tok

    def skip_line(self) -> None:
        while self.i < len(self.toks) and self.toks[self.i].kind != "nl":
            self.i += 1

    def matching(self, open_idx: int) -> int:
        """Index of the bracket closing the one at open_idx (all bracket kinds nest)."""
        pairs = {"(": ")", "[": "]", "{": "}"}
        stack: list[str] = []
        for j in range(open_idx, len(self.toks)):
            t = self.toks[j].text
            if self.toks[j].kind != "punct":
                continue
            if t in pairs:
                stack.append(pairs[t])
            elif t in (")", "]", "}"):
                if not stack or stack.pop() != t:
                    raise self.error(self.toks[j], f"unbalanced {t!r}")
                if not stack:
                    return j
        raise self.error(self.toks[open_idx], f"unclosed {self.toks[open_idx].text!r}")

    def parse(self) -> Module:
        functions: list[Function] = []
        target: list[str] = []
        while (tok := self.peek()) is not None:
            if tok.text in _LINE_DIRECTIVES:
                start = self.i
                self.skip_line()
                if tok.text == ".target":
                    target = [t.text for t in self.toks[start + 1 : self.i] if t.kind == "word"]
                continue
            if tok.text == ".section":  # debug sections: `.section .debug_x { ... }`
                while self.next().text != "{":
                    pass
                self.i = self.matching(self.i - 1) + 1
                continue
            functions.extend(self.parse_declaration())
        if not target:
            raise self.error(None, "no .target directive: not a PTX module")
        return Module(self.text, self.all_tokens, functions, target)

    def parse_declaration(self) -> list[Function]:
        """A variable/alias/pragma declaration ending in `;`, or a function."""
        qualifiers: list[str] = []
        while True:
            tok = self.next()
            if tok.text in (".entry", ".func"):
                return [self.parse_function(tok.text[1:], qualifiers)]
            if tok.text == ";":
                return []
            if tok.text in ("{", "(", "["):  # initialisers: `= {1, 2}`
                self.i = self.matching(self.i - 1) + 1
                continue
            if tok.text in ("}", ")", "]"):
                raise self.error(tok, f"unbalanced {tok.text!r}")
            qualifiers.append(tok.text)

    def parse_function(self, kind: str, qualifiers: list[str]) -> Function:
        tok = self.next()
        if kind == "func" and tok.text == "(":  # return parameter list
            self.i = self.matching(self.i - 1) + 1
            tok = self.next()
        if tok.kind != "word":
            raise self.error(tok, f"expected a {kind} name, got {tok.text!r}")
        name_tok = tok
        params: list[Param] = []
        p_open = p_close = None
        nxt = self.peek()
        if nxt is not None and nxt.text == "(":
            self.next()
            open_idx = self.i - 1
            close_idx = self.matching(open_idx)
            p_open, p_close = self.toks[open_idx], self.toks[close_idx]
            params = self.split_params(self.toks[open_idx + 1 : close_idx])
            self.i = close_idx + 1
        directives: list[tuple[str, list[str]]] = []
        while True:
            tok = self.next()
            if tok.text == "{":
                open_idx = self.i - 1
                close_idx = self.matching(open_idx)
                body = self.toks[open_idx + 1 : close_idx]
                self.i = close_idx + 1
                fn = Function(
                    kind,
                    name_tok.text,
                    name_tok,
                    qualifiers,
                    params,
                    p_open,
                    p_close,
                    directives,
                    self.toks[open_idx],
                    self.toks[close_idx],
                )
                fn.body_tokens = body
                fn.statements = self.split_statements(body)
                return fn
            if tok.text == ";":
                if directives and directives[-1][0] == ".pragma":
                    continue  # `.pragma "...";` may sit between header and body
                return Function(
                    kind,
                    name_tok.text,
                    name_tok,
                    qualifiers,
                    params,
                    p_open,
                    p_close,
                    directives,
                    None,
                    None,
                )
            if tok.kind == "word" and tok.text.startswith("."):
                directives.append((tok.text, []))
            elif tok.text == "(" and directives:  # e.g. `.attribute(.unified(...))`
                close_idx = self.matching(self.i - 1)
                directives[-1][1].extend(t.text for t in self.toks[self.i : close_idx])
                self.i = close_idx + 1
            elif tok.text != "," and directives:
                directives[-1][1].append(tok.text)
            elif tok.text != ",":
                raise self.error(tok, f"unexpected {tok.text!r} in {name_tok.text} header")

    def split_params(self, toks: list[Token]) -> list[Param]:
        toks = [t for t in toks if t.kind != "nl"]
        groups: list[list[Token]] = [[]]
        depth = 0
        for t in toks:
            if t.text in ("[", "("):
                depth += 1
            elif t.text in ("]", ")"):
                depth -= 1
            if t.text == "," and depth == 0:
                groups.append([])
            else:
                groups[-1].append(t)
        params = []
        for g in groups:
            if not g:
                continue
            names = [t for t in g if t.kind == "word" and not t.text.startswith(".")]
            if not names:
                raise self.error(g[0], "parameter without a name")
            params.append(Param(names[0].text, g))
        return params

    def split_statements(self, toks: list[Token]) -> list[Statement]:
        out: list[Statement] = []
        cur: list[Token] = []
        for t in toks:
            if t.kind == "nl":
                if cur and cur[0].text in _LINE_DIRECTIVES:
                    out.append(Statement(cur))
                    cur = []
                continue
            if not cur and t.text in ("{", "}"):
                continue  # scope braces; a `{` inside a statement is a vector operand
            if t.text == ";":
                if cur:
                    out.append(Statement(cur))
                cur = []
            elif t.text == ":" and len(cur) == 1 and cur[0].kind == "word":
                cur = []  # label
            else:
                cur.append(t)
        if cur and cur[0].text not in _LINE_DIRECTIVES:
            raise self.error(cur[0], f"statement not terminated by ';': {cur[0].text!r}")
        if cur:
            out.append(Statement(cur))
        return out


def parse_module(text: str) -> Module:
    """Parse PTX text; raises PtxParseError (with a line number) on malformed input."""
    return _Parser(text).parse()
