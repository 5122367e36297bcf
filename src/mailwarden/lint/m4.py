"""Just enough of m4 to read a sendmail ``.mc`` file the way ``m4`` reads it.

The scanner follows m4's lexical rules with sendmail's quotes (`` ` `` opens, ``'`` closes, and they
nest): quoted text is never scanned for macros, ``#`` starts a comment up to the end of the line,
``dnl`` discards the rest of its line, and a macro's arguments are split on commas outside quotes
and parentheses, with one level of quotes removed and leading unquoted blanks dropped. It reports
the calls of the macros the caller asks for; everything else is passed over. Macro expansion
itself is not performed: the options the lint cares about are written literally in practice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Set
from dataclasses import dataclass

from mailwarden.lint.errors import LintInputError

OPEN, CLOSE = "`", "'"


@dataclass(frozen=True)
class MacroCall:
    """One call of an interesting macro: its name, its arguments, where it starts and ends."""

    name: str
    args: tuple[str, ...]
    line: int
    dnl: bool


# The scanner jumps from one character that matters to the next with these, instead of
# stepping through the text one character at a time: a 4 MiB file is scanned in well under a
# second, and the cost stays linear in its size.
_QUOTE = re.compile("[`']")
_TOP = re.compile(r"[`#A-Za-z_]")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ARG_SPECIAL = re.compile(r"[`'#(),]")
_BLANKS = re.compile(r"[ \t\n\r]*")


class _Scanner:
    def __init__(self, text: str, file: str) -> None:
        self.text = text
        self.file = file
        self.pos = 0
        self.line = 1

    def advance(self, count: int = 1) -> None:
        end = min(self.pos + count, len(self.text))
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end

    def skip_line(self) -> None:
        end = self.text.find("\n", self.pos)
        self.advance((len(self.text) if end < 0 else end + 1) - self.pos)

    def quoted(self) -> str:
        """The text of a quoted string at ``pos`` without its outer quotes (inner ones kept)."""
        start_line = self.line
        depth = 0
        out: list[str] = []
        text = self.text
        while True:
            found = _QUOTE.search(text, self.pos)
            if found is None:
                break
            at = found.start()
            if depth:
                out.append(text[self.pos : at])
            self.advance(at + 1 - self.pos)
            if text[at] == OPEN:
                depth += 1
                if depth == 1:
                    continue
            else:
                depth -= 1
                if depth == 0:
                    return "".join(out)
            out.append(text[at])
        self.advance(len(text) - self.pos)
        raise LintInputError(
            self.file, start_line, "unbalanced m4 quotes: a ` opened here is never closed by '"
        )

    def arguments(self, name: str) -> tuple[str, ...]:
        """The arguments of the call whose ``(`` is at ``pos``."""
        start_line = self.line
        self.advance()
        text = self.text
        args: list[str] = []
        current: list[str] = []
        depth = 1
        leading = True
        while self.pos < len(text):
            if leading:
                blanks = _BLANKS.match(text, self.pos)
                assert blanks is not None  # ``*`` always matches
                self.advance(blanks.end() - self.pos)
                leading = False
                continue
            found = _ARG_SPECIAL.search(text, self.pos)
            if found is None:
                current.append(text[self.pos :])
                self.advance(len(text) - self.pos)
                break
            at = found.start()
            if at > self.pos:
                current.append(text[self.pos : at])
                self.advance(at - self.pos)
            ch = text[at]
            if ch == OPEN:
                current.append(self.quoted())
                continue
            if ch == CLOSE:
                raise LintInputError(
                    self.file, self.line, f"unbalanced m4 quotes: ' without ` in {name}(…)"
                )
            self.advance()
            if ch == "#":
                end = text.find("\n", self.pos)
                stop = len(text) if end < 0 else end
                current.append("#" + text[self.pos : stop])
                self.advance(stop - self.pos)
                continue
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    args.append("".join(current))
                    return tuple(args)
            elif ch == "," and depth == 1:
                args.append("".join(current))
                current = []
                leading = True
                continue
            current.append(ch)
        raise LintInputError(
            self.file, start_line, f"{name}( opened here is never closed by a matching ')'"
        )


def scan(text: str, file: str, wanted: Set[str]) -> Iterator[MacroCall]:
    """Yield the calls of the macros in ``wanted``, in file order."""
    s = _Scanner(text, file)
    while s.pos < len(s.text):
        found = _TOP.search(s.text, s.pos)
        if found is None:
            s.advance(len(s.text) - s.pos)
            break
        s.advance(found.start() - s.pos)
        ch = s.text[s.pos]
        if ch == OPEN:
            s.quoted()
        elif ch == "#":
            s.skip_line()
        else:
            word_match = _WORD.match(s.text, s.pos)
            assert word_match is not None  # _TOP found a word start here
            word = word_match.group()
            s.pos = word_match.end()
            if word == "dnl":
                s.skip_line()
            elif word == "changequote":
                raise LintInputError(file, s.line, "changequote is not supported by the lint")
            elif word in wanted:
                line = s.line
                args: tuple[str, ...] = ()
                if s.pos < len(s.text) and s.text[s.pos] == "(":
                    args = s.arguments(word)
                dnl = s.text.startswith("dnl", s.pos)
                yield MacroCall(word, args, line, dnl)
