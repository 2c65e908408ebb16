"""Glob patterns for routes, resources and values, matched in linear time.

The language is deliberately small:

* ``*`` matches any run of characters (including none) that contains no separator;
* ``**`` matches any run of characters at all, separators included;
* ``**/`` (when ``/`` is a separator) also matches nothing, so ``src/**/x`` matches
  ``src/x`` as in the Claw reference;
* ``?`` matches exactly one character that is not a separator;
* every other character matches itself. There is no escaping and no character class.

Which characters are separators depends on what is matched, and is fixed here:

* keyturn tool routes (rule ``routes``): ``.`` and ``/``. ``payments.*`` matches
  ``payments.transfer`` but not ``payments.transfer.bulk``; write ``payments.**`` for
  every route below ``payments.`` (and list ``payments`` itself if you mean it).
* Claw v2 ``actions`` and ``resources``, the ``glob`` condition operator and Claw's
  ``StringLike``: ``/`` only, as the Claw reference does, so ``*@corp.example`` matches
  ``a.b@corp.example`` and a Claw policy decides here as it does there.

Matching never backtracks: patterns with wildcards run as a bit-parallel NFA over the
text (one pass, a few integer operations per character), so a hostile value cannot
make a pattern take quadratic or exponential time (no ReDoS).
"""

from __future__ import annotations

ROUTE_SEPARATORS = "./"
VALUE_SEPARATORS = "/"

_LIT, _ANY1, _STAR, _DSTAR, _SPLIT = 0, 1, 2, 3, 4


class Glob:
    """A compiled glob. Immutable; :meth:`match` is safe on any text."""

    __slots__ = (
        "_any1",
        "_dstar",
        "_eps1",
        "_eps3",
        "_exact",
        "_final",
        "_lits",
        "_mode",
        "_prefix",
        "_seps",
        "_star",
        "pattern",
    )

    def __init__(self, pattern: str, *, separators: str) -> None:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("a glob pattern is a non-empty string")
        self.pattern = pattern
        self._seps = frozenset(separators)
        tokens: list[tuple[int, str]] = []
        i = 0
        while i < len(pattern):
            ch = pattern[i]
            if pattern.startswith("**", i):
                i += 2
                while i < len(pattern) and pattern[i] == "*":  # "***" is "**"
                    i += 1
                if "/" in self._seps and i < len(pattern) and pattern[i] == "/":
                    # "**/" matches nothing at all, or any run that ends in "/": a
                    # non-consuming split state either enters "**" then "/" or jumps
                    # past both (only before anything is consumed).
                    tokens.append((_SPLIT, ""))
                tokens.append((_DSTAR, ""))
            elif ch == "*":
                tokens.append((_STAR, ""))
                i += 1
            elif ch == "?":
                tokens.append((_ANY1, ""))
                i += 1
            else:
                tokens.append((_LIT, ch))
                i += 1
        kinds = [k for k, _ in tokens]
        literal = "".join(c for _, c in tokens)
        self._prefix = ""
        self._exact = ""
        if all(k == _LIT for k in kinds):
            self._mode = "exact"
            self._exact = literal
        elif kinds[-1] == _DSTAR and all(k == _LIT for k in kinds[:-1]):
            self._mode = "prefix_any"
            self._prefix = "".join(c for _, c in tokens[:-1])
        elif kinds[-1] == _STAR and all(k == _LIT for k in kinds[:-1]):
            self._mode = "prefix_segment"
            self._prefix = "".join(c for _, c in tokens[:-1])
        else:
            self._mode = "nfa"
        lits: dict[str, int] = {}
        any1 = star = dstar = eps1 = eps3 = 0
        for pos, (kind, ch) in enumerate(tokens):
            bit = 1 << pos
            if kind == _LIT:
                lits[ch] = lits.get(ch, 0) | bit
            elif kind == _ANY1:
                any1 |= bit
            elif kind == _STAR:
                star |= bit
                eps1 |= bit
            elif kind == _DSTAR:
                dstar |= bit
                eps1 |= bit
            else:  # _SPLIT: into "**", or past "**" and its "/"
                eps1 |= bit
                eps3 |= bit
        self._lits = lits
        self._any1 = any1
        self._star = star
        self._dstar = dstar
        self._eps1 = eps1
        self._eps3 = eps3
        self._final = 1 << len(tokens)

    @property
    def is_literal(self) -> bool:
        """True when the pattern has no wildcard (it matches one string only)."""
        return self._mode == "exact"

    @property
    def matches_everything(self) -> bool:
        """True for ``**`` (any text, separators included)."""
        return self._mode == "prefix_any" and not self._prefix

    def match(self, text: str) -> bool:
        """Whether the whole of ``text`` matches the pattern."""
        mode = self._mode
        if mode == "exact":
            return text == self._exact
        if mode == "prefix_any":
            return text.startswith(self._prefix)
        if mode == "prefix_segment":
            if not text.startswith(self._prefix):
                return False
            seps = self._seps
            return not any(c in seps for c in text[len(self._prefix) :])
        return self._run(text)

    def _closure(self, state: int) -> int:
        eps1, eps3 = self._eps1, self._eps3
        while True:
            grown = state | ((state & eps1) << 1) | ((state & eps3) << 3)
            if grown == state:
                return state
            state = grown

    def _run(self, text: str) -> bool:
        lits, any1, star, dstar, seps = self._lits, self._any1, self._star, self._dstar, self._seps
        state = self._closure(1)
        for ch in text:
            moved = (state & lits.get(ch, 0)) << 1
            moved |= state & dstar
            if ch not in seps:
                moved |= ((state & any1) << 1) | (state & star)
            if not moved:
                return False
            state = self._closure(moved)
        return bool(state & self._final)

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"
