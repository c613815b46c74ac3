"""Own-time summary of a py-spy ``--format raw`` profile (collapsed stacks). Pure."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

__all__ = ["top_own_time"]

_LINE_NUMBER = re.compile(r":\d+\)$")


def top_own_time(lines: Iterable[str], limit: int = 15) -> list[tuple[str, int, float]]:
    """The frames most often on top of the stack: (frame, samples, share of all samples).

    Each line is ``frame;frame;...;frame count``; line numbers are dropped so a function's
    samples add up.
    """
    own: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.strip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        leaf = stack.rsplit(";", 1)[-1]
        own[_LINE_NUMBER.sub(")", leaf)] += count
    return [(frame, count, count / total) for frame, count in own.most_common(limit)]
