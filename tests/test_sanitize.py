"""Issue 15, probe group 2: the report's SVG sanitiser against the known bypasses of a pattern filter."""

import io

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from iqabench.reports.sanitize import UnsafeFigureError, css_is_safe, sanitize_svg  # noqa: E402

HEAD = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10">'


def _clean(body: str) -> str:
    return sanitize_svg(HEAD + body + "</svg>")


BYPASSES = {
    "meta refresh": '<meta http-equiv="refresh" content="0;url=https://evil.example/"/>',
    "xhtml meta refresh": '<h:meta xmlns:h="http://www.w3.org/1999/xhtml" http-equiv="refresh" content="0;url=x"/>',
    "onload on a shape": '<rect width="1" height="1" onload="alert(1)" onclick="alert(2)"/>',
    "entity javascript href": '<use xlink:href="&#106;avascript:alert(1)"/>',
    "hex entity with tab": '<use href="jav&#x09;ascript:alert(1)"/>',
    "foreignObject": '<foreignObject><body xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></body>'
                     '</foreignObject>',
    "xlink href to a page": '<use xlink:href="https://evil.example/x.svg#a"/>',
    "script": "<script>alert(1)</script>",
    "style url javascript": '<rect width="1" height="1" style="fill: url(javascript:alert(1))"/>',
    "style escaped javascript": '<rect width="1" height="1" style="background: u\\72l(j\\61vascript:alert(1))"/>',
    "style element import": "<style>@import 'https://evil.example/x.css';</style>",
    "animate href": '<a id="x"><animate attributeName="href" to="javascript:alert(1)"/></a>',
    "set onmouseover": '<set attributeName="onmouseover" to="alert(1)"/>',
    "anchor": '<a href="javascript:alert(1)"><rect width="1" height="1"/></a>',
    "iframe": '<iframe xmlns="http://www.w3.org/1999/xhtml" src="https://evil.example/"/>',
    "style image-set": '<rect width="1" height="1" style="fill: image-set(\'https://evil.example/a.png\' 1x)"/>',
    "style webkit image-set": "<style>rect{background:-webkit-image-set('//evil.example/a.png' 1x)}</style>",
    "style image()": '<rect width="1" height="1" style="background: image(\'https://evil.example/a.png\')"/>',
    "style src()": "<style>@font-face{font-family:f;src:src('https://evil.example/f.woff')}</style>",
    "style quoted remote": '<rect width="1" height="1" style="cursor: \'https://evil.example/c.cur\'"/>',
    "style escaped image-set": '<rect width="1" height="1" style="fill: im\\61ge-set(\'evil.example/a\')"/>',
    "data uri html on image": '<image href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="/>',
}
FORBIDDEN = ("<script", "<meta", "onerror", "onload", "onclick", "onmouseover", "javascript", "<foreignobject",
             "evil.example", "<animate", "<set", "<iframe", "@import", "text/html", "<a ", "<img")


@pytest.mark.parametrize("name", list(BYPASSES))
def test_known_bypass_is_removed(name):
    out = _clean(BYPASSES[name]).lower()
    assert not [token for token in FORBIDDEN if token in out], out


def test_entity_declarations_are_refused_not_expanded():
    bomb = ('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            + HEAD + "<text>&b;</text></svg>")
    with pytest.raises(UnsafeFigureError, match="declares XML entities"):
        sanitize_svg(bomb)


@pytest.mark.parametrize("text", [
    "<svg><meta http-equiv=refresh content=0;url=x></svg>",  # HTML-style unquoted attributes
    HEAD + '<image/onerror="alert(1)" xlink:href="data:image/png;base64,AAAA"/></svg>',  # the /onerror= trick
    "not svg at all",
    '<html xmlns="http://www.w3.org/1999/xhtml"/>',
])
def test_unparsable_or_non_svg_is_refused_whole(text):
    with pytest.raises(UnsafeFigureError, match="figure 'f'"):
        sanitize_svg(text, name="f")


def test_markup_in_text_stays_text():
    out = _clean("<title>&lt;/title&gt;&lt;img src=x onerror=alert(1)&gt;</title><text>&lt;script&gt;</text>")
    assert "<img" not in out and "<script" not in out
    assert "&lt;img src=x onerror=alert(1)&gt;" in out and "&lt;script&gt;" in out


def test_css_checks():
    assert css_is_safe("fill: url(#p1a2b); stroke: #000")
    assert not css_is_safe("fill: url( 'https://x' )")
    assert not css_is_safe("x: exp\\ression(alert(1))")
    assert not css_is_safe("background:url(j\u200bavascript:alert(1))")
    assert not css_is_safe("fill: image-set('a.png' 1x)")  # a relative file is outside the report too
    assert not css_is_safe("fill: -webkit-image-set(\"https://x/a.png\" 2x)")
    assert not css_is_safe("background: image('x.png')")
    assert not css_is_safe("src: src('f.woff')")
    assert not css_is_safe("cursor: '//x/c.cur'")
    assert not css_is_safe('cursor: "ftp://x/c.cur"')
    assert not css_is_safe("@font-face{font-family:f}")
    assert css_is_safe("*{stroke-linejoin: round; stroke-linecap: butt}")  # matplotlib's own <style>
    assert css_is_safe("font-family: 'DejaVu Sans', sans-serif; font-size: 10px")


def test_a_real_matplotlib_figure_keeps_its_drawing():
    import matplotlib.pyplot as plt

    from iqabench.reports.persist import figure_svg

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0], label="line")
    ax.imshow(np.arange(4.0).reshape(2, 2))
    ax.set_title("a <title> & text")
    ax.legend()
    raw = figure_svg(fig, salt="t")
    plt.close(fig)
    out = sanitize_svg(raw)
    assert out.startswith("<svg") and "<?xml" not in out and "DOCTYPE" not in out
    assert out.count("<path") == raw.count("<path")
    assert out.count("<use") == raw.count("<use") and 'xlink:href="#' in out
    assert 'xlink:href="data:image/png;base64,' in out  # the imshow raster
    assert "clip-path=\"url(#" in out and "a &lt;title&gt; &amp; text" in out
    assert sanitize_svg(out) == out  # stable: sanitising twice changes nothing
    io.StringIO(out)
