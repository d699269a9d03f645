"""Parser for larcv's PSet configuration text.

A PSet is a block of ``key: value`` pairs; a value is a scalar, a list ``[a, b, c]``
or a nested block ``{ ... }``.  Scalars may be quoted (``"data"``) or bare
(``false``, ``6``, ``1.5e3``, ``sbndwire``)::

    ThreadProcessor: {
      Verbosity: 2
      InputFiles: ["copy00.root"]
      ProcessList: { test: { ImageProducer: "data"  Channels: [0,1,2] } }
    }

Source: larcv ``core/Base/PSet.cxx`` and ``ConfigManager`` (the format of larcv's
``.cfg`` files).  Bare ``true``/``false`` become bool, integers int, other numbers
float, the rest str; quoted scalars stay str.  ``#`` and ``//`` start a comment that
runs to the end of the line (outside quotes).
"""

from __future__ import annotations

import re

from tpcflow.errors import ConfigError

__all__ = ["parse_pset"]

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|,)
  | (?P<comment>(?:\#|//)[^\n]*)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<punct>[{}\[\]:])
  | (?P<word>[^\s{}\[\]:,"'#]+)
    """,
    re.VERBOSE,
)
_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")


def _tokens(text: str) -> list[tuple[str, object, int]]:
    out: list[tuple[str, object, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise ConfigError(f"PSet text: unexpected character {text[pos]!r} at line {line}")
        kind = m.lastgroup
        if kind == "str":
            raw = m.group()[1:-1]
            out.append(("str", re.sub(r"\\(.)", r"\1", raw), pos))
        elif kind == "punct":
            out.append((m.group(), m.group(), pos))
        elif kind == "word":
            out.append(("word", m.group(), pos))
        pos = m.end()
    return out


def _scalar(kind: str, value: str):
    if kind == "str":
        return value
    low = value.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    if _INT.match(value):
        return int(value)
    if _FLOAT.match(value):
        return float(value)
    return value


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def where(self) -> str:
        pos = self.toks[self.i][2] if self.i < len(self.toks) else len(self.text)
        return f"at line {self.text.count(chr(10), 0, pos) + 1}"

    def peek(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def take(self, kind: str | None = None):
        if self.i >= len(self.toks):
            raise ConfigError(f"PSet text: unexpected end of text, expected {kind or 'a value'}")
        tok = self.toks[self.i]
        if kind is not None and tok[0] != kind:
            raise ConfigError(f"PSet text: expected {kind!r} but got {tok[1]!r} {self.where()}")
        self.i += 1
        return tok

    def block(self, closing: str | None) -> dict:
        out: dict = {}
        while True:
            kind = self.peek()
            if kind is None:
                if closing is not None:
                    raise ConfigError(f"PSet text: missing {closing!r} at end of text")
                return out
            if kind == closing:
                self.take()
                return out
            if kind not in ("word", "str"):
                raise ConfigError(f"PSet text: expected a key but got {self.toks[self.i][1]!r} {self.where()}")
            key = self.take()[1]
            self.take(":")
            if key in out:
                raise ConfigError(f"PSet text: key {key!r} given twice {self.where()}")
            out[key] = self.value()

    def value(self):
        kind = self.peek()
        if kind == "{":
            self.take()
            return self.block("}")
        if kind == "[":
            self.take()
            items = []
            while self.peek() != "]":
                if self.peek() is None:
                    raise ConfigError("PSet text: missing ']' at end of text")
                items.append(self.value())
            self.take("]")
            return items
        if kind in ("word", "str"):
            tok = self.take()
            return _scalar(tok[0], tok[1])
        got = self.toks[self.i][1] if kind else "end of text"
        raise ConfigError(f"PSet text: expected a value but got {got!r} {self.where()}")


def parse_pset(text: str) -> dict:
    """Parse larcv PSet text into nested dicts.

    Parameters
    ----------
    text : str
        One or more top-level ``Name: { ... }`` blocks (or bare ``key: value`` pairs).

    Returns
    -------
    dict
        ``{name: {key: value, ...}}``; lists become Python lists, blocks dicts.

    Raises
    ------
    ConfigError
        On a syntax error (with the line number) or a key given twice in one block.

    Examples
    --------
    >>> parse_pset('P: { A: 1  B: [x, "y"]  C: { D: false } }')
    {'P': {'A': 1, 'B': ['x', 'y'], 'C': {'D': False}}}
    """
    return _Parser(text).block(None)
