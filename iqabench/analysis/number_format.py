"""One number formatter for every table, figure and export.

Why one: the same value must read the same in the HTML report, a heatmap annotation, a ``.tex`` table and the
terminal. Rules (issue 27):

* significant figures, not fixed decimals: ``format_number`` keeps ``SIG`` (3) significant figures and drops
  trailing zeros, so a percentile reads ``99`` (not ``99.00``) and a lambda ``0.1`` (not ``0.1000``);
* a true minus sign (U+2212) and never ``-0``: a value that rounds to zero prints ``0``;
* tiny and huge magnitudes as ``1.97×10⁻¹¹`` (not ``1.973e-11``), one notation per cell;
* an estimate with its CI (``format_ci``) prints the three numbers with the same decimals, enough to resolve
  the interval's width (a narrow CI around 6.85 reads ``6.851 [6.850, 6.852]``, not ``6.85 [6.85, 6.85]``);
  a CI of zero width (one observation) prints the estimate alone: its brackets would claim a precision that
  was never measured.

``latex_number`` turns any of these strings into LaTeX (``$-$``, ``$\\times 10^{-11}$``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

SIG = 3  # significant figures of a single number
CI_WIDTH_SIG = 2  # significant figures the CI's width keeps (so low and high differ on the page)
MAX_EXTRA_DECIMALS = 3  # beyond SIG: a degenerate but non-zero CI never asks for 12 decimals
MINUS = "\u2212"
MISSING = "–"
TIMES = "×"
_SMALL, _LARGE = 1e-3, 1e6  # outside [_SMALL, _LARGE): scientific notation
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_FROM_SUPERSCRIPT = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")


def is_number(value: Any) -> bool:
    """A real number that is not a bool (True is not "1")."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _magnitude(value: float) -> int:
    return math.floor(math.log10(abs(value))) if value else 0


def _signed(text: str) -> str:
    """``-`` -> true minus; ``-0``, ``-0.00`` -> unsigned (a value that rounds to zero has no sign)."""
    if text.startswith("-"):
        body = text[1:]
        if not any(ch in "123456789" for ch in body.split("e")[0].split(TIMES)[0]):
            return body
        return MINUS + body
    return text


def _trim(text: str) -> str:
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _scientific(value: float, digits: int) -> str:
    """``1.97×10⁻¹¹`` with ``digits`` significant figures in the mantissa."""
    mantissa, exponent = f"{value:.{max(0, digits - 1)}e}".split("e")
    return _signed(f"{_trim(mantissa)}{TIMES}10{str(int(exponent)).translate(_SUPERSCRIPT)}")


def _special(value: Any) -> str | None:
    if value is None:
        return MISSING
    if not is_number(value):
        return str(value)
    if isinstance(value, numbers.Integral):
        return _signed(str(int(value)))
    value = float(value)
    if math.isnan(value):
        return MISSING
    if math.isinf(value):
        return "∞" if value > 0 else MINUS + "∞"
    return None


def format_number(value: Any, decimals: int | None = None, sig: int = SIG, trim: bool = True) -> str:
    """A number as the report prints it: ints as is, floats to ``sig`` significant figures (trailing zeros
    dropped), NaN/None as a dash, a true minus sign, scientific notation outside [1e-3, 1e6).

    ``decimals`` forces fixed decimals (kept, not trimmed): how :func:`format_ci` lines up a CI's bounds.
    ``trim=False`` keeps trailing zeros: measured scores side by side (a grid's thumbnails) keep one precision.
    """
    special = _special(value)
    if special is not None:
        return special
    value = float(value)
    if decimals is not None:
        return _signed(f"{value:.{decimals}f}")
    if value != 0 and not _SMALL <= abs(value) < _LARGE:
        return _scientific(value, sig)
    places = max(0, sig - 1 - _magnitude(value))
    rounded = round(value, places)
    if rounded and _magnitude(rounded) != _magnitude(value):  # 9.996 -> 10.0: one significant figure fewer
        places = max(0, places - 1)
    text = f"{value:.{places}f}"
    return _signed(_trim(text) if trim else text)


def ci_decimals(value: float, low: float, high: float, sig: int = SIG) -> int | None:
    """Decimals that show ``sig`` significant figures of the largest of the three and ``CI_WIDTH_SIG`` of the
    interval's width (capped); None when the triple needs scientific notation."""
    largest = max(abs(value), abs(low), abs(high))
    if largest != 0 and not _SMALL <= largest < _LARGE:
        return None
    base = max(0, sig - 1 - _magnitude(largest)) if largest else 0
    width = abs(high - low)
    if width > 0:
        base = max(base, min(base + MAX_EXTRA_DECIMALS, CI_WIDTH_SIG - 1 - _magnitude(width)))
    return base


def format_ci(value: Any, low: Any, high: Any, sig: int = SIG) -> str:
    """``estimate [low, high]`` in one notation with shared decimals; the estimate alone when the bounds are
    missing or the interval has zero width (see the module docstring)."""
    special = _special(value)
    if special is not None and not (is_number(value) and isinstance(value, numbers.Integral)):
        return special
    value = float(value)
    if not all(is_number(b) and math.isfinite(float(b)) for b in (low, high)) or float(low) == float(high):
        return format_number(value, sig=sig)
    low, high = float(low), float(high)
    decimals = ci_decimals(value, low, high, sig)
    if decimals is None:  # tiny or huge: a shared exponent, so the three numbers compare at a glance
        exponent = _magnitude(max(abs(value), abs(low), abs(high)))
        scale = 10.0 ** exponent
        digits = ci_decimals(value / scale, low / scale, high / scale, sig) or 0
        parts = [_signed(f"{v / scale:.{digits}f}") for v in (value, low, high)]
        return f"{parts[0]} [{parts[1]}, {parts[2]}] {TIMES}10{str(exponent).translate(_SUPERSCRIPT)}"
    parts = [format_number(v, decimals) for v in (value, low, high)]
    return f"{parts[0]} [{parts[1]}, {parts[2]}]"


def latex_number(text: str) -> str:
    """A formatted (and already LaTeX-escaped) string with its minus signs, exponents and infinities in math
    mode: ``−1.2×10⁻³`` -> ``$-$1.2$\\times 10^{-3}$``."""
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == TIMES and text[i + 1:i + 3] == "10":
            j = i + 3
            while j < len(text) and text[j] in "⁻⁰¹²³⁴⁵⁶⁷⁸⁹":
                j += 1
            out.append(f"$\\times 10^{{{text[i + 3:j].translate(_FROM_SUPERSCRIPT)}}}$")
            i = j
            continue
        out.append({MINUS: "$-$", "∞": "$\\infty$", MISSING: "--"}.get(ch, ch))
        i += 1
    return "".join(out)
