"""Met, not met or undecided: how every report and command answers a target from a measurement."""

MET, NOT_MET, UNDECIDED = "met", "not met", "undecided"


def verdict(low, high, line, *, above=True, strict=False):
    """The answer to "the measured value is at least `line`" from its interval [low, high]: met when
    the interval lies wholly on the target's side of the line, not met when wholly on the other side,
    undecided when it straddles it; never from a point alone (a measurement without an interval
    gives low == high). above=False asks "at most `line`"; strict asks "more than" ("less than")."""
    if not above:
        low, high, line = -high, -low, -line
    if low > line or (low == line and not strict):
        return MET
    if high < line or (high == line and strict):
        return NOT_MET
    return UNDECIDED


def worst(verdicts):
    """Several measurements must all meet one target: one "not met" decides, then one "undecided"."""
    for answer in (NOT_MET, UNDECIDED):
        if answer in verdicts:
            return answer
    return MET
