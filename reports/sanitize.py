"""Allow-list sanitiser for the SVG figures a report inlines.

Figures are read back from ``runs/<id>/results/*.svg``, a folder anyone with
write access to the store can change, and they are inlined into the report as
markup. A pattern filter over the text cannot be made safe (issue 15 found
``<meta http-equiv=refresh>``, ``/onerror=`` and ``&#106;avascript:`` passing
one), so the figure is parsed as XML and rebuilt from what an allow-list names:

* elements: the SVG drawing vocabulary matplotlib writes, in the SVG
  namespace only; anything else (``script``, ``foreignObject``, ``meta``, ``a``,
  ``iframe``, ``animate``, ``set``, elements of other namespaces) is dropped
  with its whole subtree;
* attributes: presentation and geometry attributes by name; every other
  attribute, event handlers included, is dropped;
* links (``href``/``xlink:href``): a same-document ``#id`` only, or a base64
  PNG/JPEG data URI on ``<image>`` (matplotlib's rasterised images);
* CSS (``style`` attributes and ``<style>`` text): refused when, after
  removing whitespace, control characters and CSS escapes, it holds
  ``url(`` to anything but ``#id``, ``@import``, ``@font-face``, ``expression(``,
  a resource-loading function without ``url(`` (``image-set(``, ``image(``,
  ``src(``, ``cross-fade(``, ``element(``), a ``//`` or ``scheme://`` address
  (quoted or not) or a ``javascript:``/``data:`` scheme. ``<style>`` elements
  are kept under the same check: matplotlib writes one in every SVG
  (``*{stroke-linejoin: round; stroke-linecap: butt}``), and dropping it would
  change how its lines are joined.

Entities are decoded by the parser before any check (so ``&#106;avascript:``
is seen as ``javascript:``), and a DTD that declares entities is refused
outright (no entity expansion, no external fetches). The rebuilt tree is
serialised by ElementTree, which escapes ``<``, ``>`` and ``&`` in text and
attributes, so nothing in the output can open a tag when the HTML parser reads it.
The report's Content-Security-Policy stays as a second wall.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from xml.parsers import expat

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"

ALLOWED_ELEMENTS = frozenset({
    "svg", "g", "defs", "clipPath", "mask", "pattern", "marker", "symbol", "use", "path", "rect", "circle",
    "ellipse", "line", "polyline", "polygon", "text", "tspan", "title", "desc", "metadata", "style",
    "linearGradient", "radialGradient", "stop", "image",
})
# Elements whose content is text only (children dropped): title and desc are HTML integration points in
# inline SVG, and style must never hold markup.
TEXT_ONLY_ELEMENTS = frozenset({"title", "desc", "style"})
ALLOWED_ATTRIBUTES = frozenset({
    "id", "class", "version", "width", "height", "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "rx", "ry",
    "d", "points", "transform", "viewBox", "preserveAspectRatio", "style", "fill", "fill-opacity", "fill-rule",
    "stroke", "stroke-width", "stroke-opacity", "stroke-linecap", "stroke-linejoin", "stroke-dasharray",
    "stroke-dashoffset", "stroke-miterlimit", "opacity", "clip-path", "clip-rule", "clipPathUnits", "mask",
    "font-family", "font-size", "font-style", "font-weight", "text-anchor", "dominant-baseline",
    "alignment-baseline", "letter-spacing", "dx", "dy", "rotate", "textLength", "lengthAdjust", "offset",
    "stop-color", "stop-opacity", "gradientUnits", "gradientTransform", "patternUnits", "patternTransform",
    "markerWidth", "markerHeight", "refX", "refY", "orient", "markerUnits", "marker-start", "marker-mid",
    "marker-end", "display", "visibility", "color", "type", "href", "overflow", "vector-effect",
})
LINK_ATTRIBUTES = frozenset({"href", f"{{{XLINK_NS}}}href"})

_LOCAL_REF = re.compile(r"^#[A-Za-z_][\w.\-:]*$")
_RASTER_DATA_URI = re.compile(r"^data:image/(?:png|jpeg);base64,[A-Za-z0-9+/=\s]*$")
# CSS escapes (\6a, \000006a, \j) are decoded by browsers before matching keywords.
_CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6}\s?|.)", re.DOTALL)
_INVISIBLE = re.compile(r"[\x00-\x20\x7f-\x9f\u00ad\u200b-\u200f\u2028\u2029\u2060\ufeff]+")
_CSS_URL = re.compile(r"url\(([^)]*)\)")
_CSS_DANGER = ("@import", "expression(", "javascript:", "vbscript:", "behavior:", "-moz-binding", "<", "data:",
               # CSS functions and rules that fetch a resource without url(): image-set("x.png") (and its
               # -webkit- form), image("x.png"), src("x"), cross-fade(), element(), @font-face
               "image-set(", "image(", "src(", "cross-fade(", "element(", "@font-face")
# a scheme-relative or absolute address, quoted or not ("https://x", '//x', ftp://x): nothing outside is loaded
_CSS_REMOTE = re.compile(r"(?:^|[\s'\"(,:])(?:[a-z][a-z0-9+.\-]*:)?//")


class UnsafeFigureError(ValueError):
    """A figure that cannot be parsed as SVG (so cannot be sanitised) and is left out of the report."""


def _squash(text: str) -> str:
    """Lowercased, CSS escapes decoded, whitespace and invisible characters removed: what a browser matches."""

    def decode(match: re.Match[str]) -> str:
        body = match.group(1).strip()
        if re.fullmatch(r"[0-9a-fA-F]{1,6}", body):
            code = int(body, 16)
            return chr(code) if 0 < code < 0x110000 else ""
        return body

    return _INVISIBLE.sub("", _CSS_ESCAPE.sub(decode, text)).lower()


def css_is_safe(css: str) -> bool:
    """True when CSS can neither load anything nor run code: only ``url(#id)`` references are allowed."""
    squashed = _squash(css)
    if any(token in squashed for token in _CSS_DANGER):
        return False
    if _CSS_REMOTE.search(squashed) or "://" in squashed:
        return False
    return all(_LOCAL_REF.match(ref.strip("'\"")) for ref in _CSS_URL.findall(squashed))


def link_is_safe(element: str, value: str) -> bool:
    value = value.strip()
    if _LOCAL_REF.match(value):
        return True
    return element == "image" and bool(_RASTER_DATA_URI.match(value))


def _refuse_entities(text: str) -> None:
    """A first expat pass that stops at any entity declaration (no billion laughs, no external entities)."""

    def refuse(*_args) -> None:
        raise UnsafeFigureError("the figure declares XML entities, which a report never inlines")

    parser = expat.ParserCreate()
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.Parse(text, True)


def _local(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        namespace, _, name = tag[1:].partition("}")
        return namespace, name
    return None, tag


def _clean(element: ET.Element) -> ET.Element:
    _, name = _local(element.tag)
    clean = ET.Element(f"{{{SVG_NS}}}{name}")
    for attribute, value in element.attrib.items():
        namespace, local = _local(attribute)
        if attribute in LINK_ATTRIBUTES:
            if link_is_safe(name, value):
                clean.set(attribute if namespace else "href", value)
            continue
        if namespace is not None or local not in ALLOWED_ATTRIBUTES or local == "href":
            continue
        if local == "style" and not css_is_safe(value):
            continue
        if "javascript:" in _squash(value) or "url(" in _squash(value) and not css_is_safe(value):
            continue
        clean.set(local, value)
    if name in TEXT_ONLY_ELEMENTS:
        text = "".join(element.itertext())
        if name == "style" and not css_is_safe(text):
            text = ""
        clean.text = text
        return clean
    clean.text = element.text
    for child in element:
        namespace, child_name = _local(child.tag) if isinstance(child.tag, str) else (None, "")
        if namespace == SVG_NS and child_name in ALLOWED_ELEMENTS:
            kept = _clean(child)
            kept.tail = child.tail
            clean.append(kept)
        elif child.tail:  # the dropped element's trailing text stays where it was
            if len(clean):
                clean[-1].tail = (clean[-1].tail or "") + child.tail
            else:
                clean.text = (clean.text or "") + child.tail
    return clean


def sanitize_svg(text: str, *, name: str = "figure") -> str:
    """The ``<svg>`` element of ``text`` rebuilt from allow-listed elements and attributes.

    Raises UnsafeFigureError when the text is not well-formed SVG; the caller
    leaves the figure out and says so, rather than inlining anything unparsed.
    """
    try:
        _refuse_entities(text)
        root = ET.fromstring(text)
    except expat.ExpatError as exc:
        raise UnsafeFigureError(f"figure {name!r} is not well-formed SVG ({exc})") from None
    except UnsafeFigureError as exc:
        raise UnsafeFigureError(f"figure {name!r}: {exc}") from None
    except ET.ParseError as exc:
        raise UnsafeFigureError(f"figure {name!r} is not well-formed SVG ({exc})") from None
    if _local(root.tag) != (SVG_NS, "svg"):
        raise UnsafeFigureError(f"figure {name!r} is not an SVG document (its root is {root.tag!r})")
    clean = _clean(root)
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", XLINK_NS)
    return ET.tostring(clean, encoding="unicode", short_empty_elements=True)
