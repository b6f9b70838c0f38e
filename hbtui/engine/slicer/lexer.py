"""PTX tokenizer: enough of the lexical grammar to walk module structure safely.

Comments and strings are real tokens, so a `%ctaid.x` inside a comment or a `.file`
string is never mistaken for a register read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class PtxParseError(ValueError):
    """The input is not PTX this parser understands (message names the line)."""


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # word | num | string | punct | comment | nl
    text: str
    start: int
    end: int
    line: int


# Words keep dots (opcodes like `ld.param.u32`, registers like `%ctaid.x`) and `::`
# (state-space suffixes like `ld.shared::cluster`), so a word is never split at `:`.
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \t\r\f\v]+)
  | (?P<nl>\n)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<num>0[fF][0-9a-fA-F]{8}|0[dD][0-9a-fA-F]{16}|0[xX][0-9a-fA-F]+U?
        |\d+\.\d*(?:[eE][+-]?\d+)?|\d+U?)
  | (?P<word>[A-Za-z_$%.][\w$.]*(?:::[\w$.]+)*)
  | (?P<punct>[{}()\[\];,:@!<>=+\-*/|&^~?])
    """,
    re.X | re.S,
)


def tokenize(text: str) -> list[Token]:
    """Split PTX into tokens (whitespace dropped, newlines and comments kept)."""
    tokens: list[Token] = []
    pos, line, n = 0, 1, len(text)
    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            snippet = text[pos : pos + 20].split("\n")[0]
            if text.startswith('"', pos):
                raise PtxParseError(f"line {line}: unterminated string")
            raise PtxParseError(f"line {line}: unexpected character in {snippet!r}")
        kind = m.lastgroup or ""
        if kind == "punct" and text.startswith("/*", pos):
            raise PtxParseError(f"line {line}: unterminated /* comment")
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos, m.end(), line))
        line += m.group().count("\n")
        pos = m.end()
    return tokens
