"""The WebUI's prompt editing and alternation: which text conditions each model evaluation.

``[a:b:when]`` reads ``a`` until ``when`` and ``b`` after it; ``[b:when]`` adds ``b`` at ``when``; ``[a::when]``
removes ``a`` at ``when``; ``[a|b|c]`` takes the next option at every step. ``when`` with a decimal point is a
fraction of the steps (``0.5``: half), without one a step number (``10``); they nest, and ``(...)``/``[...]``
emphasis inside is kept as text for :mod:`lib_profile.prompts.parse` to weigh. A prompt these rules cannot read
(an unmatched ``\\`` at the end, a ``|`` outside brackets) is read as plain text, as the WebUI does; stray
brackets and colons are plain text too.

The schedule is a list of ``(end_at_step, text)`` with ``end_at_step`` ascending, the last one ``steps``. As in
the WebUI, ``steps`` counts model evaluations of the sampler's nominal clock: twice the sampling steps for a
second-order sampler (:func:`total_steps`), and evaluation ``e`` (0-based, counted from the pass's first
evaluation) uses the first entry with ``e <= end_at_step`` (:func:`text_at`). A hires fix pass has its own
schedule: an integer ``when`` counts on from the first pass's steps, a fraction from 1.0 (``[a:b:1.5]`` switches
half way through the hires pass; ``[a:b:0.5]`` is ``b`` throughout it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union

_NUMBER = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*]")
_SPECIAL = "\\[]():|"


class _Unreadable(Exception):
    pass


@dataclass
class _Scheduled:
    before: Optional[list]  # None: nothing before (``[b:when]``)
    after: list
    when: str  # the number as written


@dataclass
class _Alternate:
    options: list  # each a node list


@dataclass
class _Emphasis:
    open: str
    parts: list  # node lists, joined by ":"
    close: str


Node = Union[str, _Scheduled, _Alternate, _Emphasis]


class _Parser:
    def __init__(self, text: str):
        self.s = text

    def sequence(self, i: int, top: bool) -> tuple[list, int]:
        """Nodes from ``i`` up to the first character a nested prompt cannot hold (or the end)."""
        s, out = self.s, []
        while i < len(s):
            c = s[i]
            if c == "\\":
                if i + 1 >= len(s):
                    raise _Unreadable()
                out.append(s[i:i + 2])
                i += 2
            elif c in "[(":
                try:
                    node, i = (self.bracket if c == "[" else self.paren)(i)
                    out.append(node)
                except _Unreadable:
                    if not top:
                        raise
                    out.append(c)  # a stray bracket is text at the top level
                    i += 1
            elif c in "]):|":
                if not top:
                    return out, i
                if c == "|":
                    raise _Unreadable()
                out.append(c)
                i += 1
            else:
                j = i
                while j < len(s) and s[j] not in _SPECIAL:
                    j += 1
                out.append(s[i:j])
                i = j
        return out, i

    def _at(self, i: int) -> str:
        return self.s[i] if i < len(self.s) else ""

    def bracket(self, i: int) -> tuple[Node, int]:
        first, j = self.sequence(i + 1, False)
        c = self._at(j)
        if c == "]":
            return _Emphasis("[", [first], "]"), j + 1
        if c == "|":
            options = [first]
            while self._at(j) == "|":
                option, j = self.sequence(j + 1, False)
                options.append(option)
            if self._at(j) != "]":
                raise _Unreadable()
            return _Alternate(options), j + 1
        if c != ":":
            raise _Unreadable()
        m = _NUMBER.match(self.s, j + 1)
        if m:
            return _Scheduled(None, first, m[1]), m.end()
        second, k = self.sequence(j + 1, False)
        m = _NUMBER.match(self.s, k + 1) if self._at(k) == ":" else None
        if not m:
            raise _Unreadable()
        return _Scheduled(first, second, m[1]), m.end()

    def paren(self, i: int) -> tuple[Node, int]:
        first, j = self.sequence(i + 1, False)
        if self._at(j) == ")":
            return _Emphasis("(", [first], ")"), j + 1
        if self._at(j) != ":":
            raise _Unreadable()
        second, k = self.sequence(j + 1, False)
        if self._at(k) != ")":
            raise _Unreadable()
        return _Emphasis("(", [first, second], ")"), k + 1


def _parse(prompt: str) -> Optional[list]:
    try:
        return _Parser(prompt).sequence(0, True)[0]
    except _Unreadable:
        return None


def _walk(nodes: list):
    for node in nodes:
        yield node
        if isinstance(node, _Scheduled):
            yield from _walk(node.before or [])
            yield from _walk(node.after)
        elif isinstance(node, _Alternate):
            for option in node.options:
                yield from _walk(option)
        elif isinstance(node, _Emphasis):
            for part in node.parts:
                yield from _walk(part)


def is_scheduled(prompt: str) -> bool:
    """Whether ``prompt`` uses prompt editing (``[a:b:when]``) or alternation (``[a|b]``)."""
    nodes = _parse(prompt)
    return nodes is not None and any(isinstance(n, (_Scheduled, _Alternate)) for n in _walk(nodes))


# the WebUI's composable-diffusion separator (A1111 ``prompt_parser.re_AND``): the word AND in capitals
_AND = re.compile(r"\bAND\b")


def is_composable(prompt: str) -> bool:
    """Whether ``prompt`` combines prompts with ``AND`` (the WebUI's composable diffusion: ``a cat AND a dog:0.5``
    guides toward each part with its weight). Only the capital word counts: ``and``, ``BAND`` are plain text."""
    return _AND.search(prompt) is not None


def refuse_composable(prompt: str, what: str) -> None:
    """HostError when ``prompt`` combines prompts with ``AND`` (``what``: the feature that cannot follow it)."""
    from lib_profile.hosts.base import HostError

    if is_composable(prompt):
        raise HostError(f"{what} cannot combine prompts with AND (the WebUI's composable diffusion): write one "
                        "prompt, e.g. 'a cat and a dog' instead of 'a cat AND a dog', or run it in the WebUI")


def total_steps(steps: int, pattern: str = "one") -> int:
    """The WebUI's step count for schedules: twice ``steps`` for a second-order sampler (pattern ``"two"``,
    :mod:`lib_profile.attention.clock`), else ``steps``."""
    return int(steps) * 2 if pattern == "two" else int(steps)


def schedule(prompt: str, steps: int, hires_steps: Optional[int] = None) -> list[tuple[int, str]]:
    """``prompt`` -> ``[(end_at_step, text), ...]`` over ``steps`` (:func:`total_steps`); with ``hires_steps``,
    the schedule of a hires fix pass of that many steps after a first pass of ``steps``.

    >>> schedule("a [b:c:0.5]", 10)
    [(5, 'a b'), (10, 'a c')]
    """
    nodes = _parse(prompt)
    if hires_steps is None:
        int_offset, frac_offset, total = 0, 0.0, int(steps)
    else:
        int_offset, frac_offset, total = int(steps), 1.0, int(hires_steps)
    if nodes is None:
        return [(total, prompt)]
    ends = {total}
    whens: dict[int, int] = {}
    for node in _walk(nodes):
        if isinstance(node, _Scheduled):
            value = float(node.when)
            value = (value - frac_offset) * total if "." in node.when else value - int_offset
            whens[id(node)] = min(total, int(value))
            if whens[id(node)] >= 1:
                ends.add(whens[id(node)])
        elif isinstance(node, _Alternate):
            ends.update(range(1, total + 1))

    def text(nodes_: list, step: int) -> str:
        out = []
        for node in nodes_:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, _Scheduled):
                out.append(text(node.before or [], step) if step <= whens[id(node)] else text(node.after, step))
            elif isinstance(node, _Alternate):
                out.append(text(node.options[(step - 1) % len(node.options)], step))
            else:
                out.append(node.open + ":".join(text(p, step) for p in node.parts) + node.close)
        return "".join(out)

    return [(end, text(nodes, end)) for end in sorted(ends)]


def index_at(entries: list[tuple[int, str]], evaluation: int) -> int:
    """The entry of ``entries`` that conditions model evaluation ``evaluation`` (0-based): the first whose end is
    not before it; past the last end (PLMS's extra evaluation), the first entry, as the WebUI picks."""
    for index, (end, _text) in enumerate(entries):
        if evaluation <= end:
            return index
    return 0


def text_at(entries: list[tuple[int, str]], evaluation: int) -> str:
    return entries[index_at(entries, evaluation)][1]


def refuse_scheduled(prompt: str, what: str) -> None:
    """HostError when ``prompt`` changes with the step, or combines prompts with ``AND`` (``what``: the feature
    that cannot follow it)."""
    from lib_profile.hosts.base import HostError

    refuse_composable(prompt, what)
    if is_scheduled(prompt):
        raise HostError(f"{what} needs a prompt that stays the same at every step; this one uses prompt editing "
                        "([from:to:when]) or alternation ([a|b]): write the words plainly, e.g. 'a red car' "
                        "instead of 'a [red:blue:0.5] car'")
