"""One self-contained HTML file: the Vega libraries inlined once, one spec per figure.

The page needs no network: vl-convert ships the vega / vega-lite / vega-embed bundle,
data travel inside the specs, and the favicon is a data: URL so the browser asks for
nothing. A page-side hook records render errors in `window.__retland` (and shows them
in place of the chart) so a headless browser can check the page, and a person sees
what broke.
"""
from __future__ import annotations

import base64
import functools
import html
import json
import re
from datetime import datetime, timezone

import altair as alt
import polars as pl

from .blocks import Figure, Frames, Note, Table

EMBED_OPTIONS = {
    "renderer": "svg",
    # "Save as SVG/PNG" stays; the editor and source views would open other pages.
    "actions": {"export": True, "source": False, "compiled": False, "editor": False},
}

CSS = """
.frames .scroll { overflow-x: auto; } .frames img { display: block; image-rendering: auto; }
.frames figure { margin: 0.4em 0; } .frames .anims { display: flex; gap: 1em; flex-wrap: wrap; }
.frames h3 { font-size: 1em; margin: 1em 0 0.3em; }
body { font-family: Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1280px; padding: 1em 1.5em 4em;
       box-sizing: border-box;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2.2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #555; font-size: 0.9em; }
.meta code, p code { background: #f4f4f4; padding: 0 0.25em; border-radius: 3px; }
nav ol { columns: 2; font-size: 0.95em; }
.about { color: #444; margin: 0.3em 0 0.8em; }
.note { color: #555; font-style: italic; margin: 0.4em 0; }
.caption { color: #555; font-size: 0.88em; margin: 0.2em 0 1.4em; max-width: 70em; }
/* charts are laid out for a 1280 px window; one that is wider scrolls inside its box, not the page */
.figure { overflow-x: auto; max-width: 100%; box-sizing: border-box; }
.render-error { color: #b00; font-weight: bold; white-space: pre-wrap; }
/* a table with many columns scrolls inside its box */
.table-box { overflow-x: auto; max-width: 100%; }
table.data { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
table.data th, table.data td { padding: 0.2em 0.7em; border-bottom: 1px solid #e4e4e4; text-align: left; }
table.data td.num { text-align: right; font-variant-numeric: tabular-nums; }
"""

LOADER = """
(function () {
  const state = window.__retland = {errors: [], rendered: {}, views: {}, done: false};
  window.addEventListener('error', e => state.errors.push(String(e.message || e)));
  window.addEventListener('unhandledrejection', e => state.errors.push(String(e.reason)));
  if (typeof vegaEmbed === 'undefined') {
    state.errors.push('the Vega libraries did not load');
    state.done = true;
    return;
  }
  const options = JSON.parse(document.getElementById('embed-options').textContent);
  const jobs = Array.from(document.querySelectorAll('script[data-figure]')).map(node => {
    const id = node.dataset.figure;
    const target = document.getElementById(id);
    const name = target.dataset.figureName;
    return vegaEmbed(target, JSON.parse(node.textContent), Object.assign({downloadFileName: name}, options))
      .then(result => { state.rendered[name] = true; state.views[name] = result.view; })
      .catch(err => {
        state.errors.push(id + ': ' + err);
        target.innerHTML = '<p class="render-error"></p>';
        target.firstChild.textContent = 'This chart failed to render: ' + err;
        console.error(err);
      });
  });
  Promise.all(jobs).then(() => { state.done = true; document.body.dataset.rendered = 'true'; });
})();
"""


# The Vega-Lite version Altair writes specs for, as vl-convert names it ("6.4").
VL_VERSION = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])


# vl-convert runs V8, which reserves a large cage of virtual address space at start and
# aborts the whole process (a signal, pages of C++ stack) when `ulimit -v` denies it;
# measured: dies at 70 GB, works at 140 GB.
RENDERER_ADDRESS_SPACE = 128 * 2**30


def check_renderer_room() -> None:
    """Refuse, in one line and before any work, to start the chart renderer under an
    address-space limit it cannot start in."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return
    if soft not in (resource.RLIM_INFINITY, -1) and 0 < soft < RENDERER_ADDRESS_SPACE:
        from retland.warehouse import WarehouseError

        raise WarehouseError(
            f"the report's chart renderer (vl-convert, i.e. V8) reserves about 100 GiB of virtual address space "
            f"and cannot start under this address-space limit (ulimit -v {soft // 1024} KiB); run the report "
            "without a -v limit (e.g. `ulimit -v unlimited`; resident memory stays small), or read the numbers "
            "with `retland stats` / `retland export`")


@functools.cache
def vega_bundle() -> str:
    """vega + vega-lite + vega-embed as one script that sets window.vegaEmbed, from
    vl-convert (offline)."""
    check_renderer_room()
    import vl_convert as vlc  # an 84 MB native library, loaded only when a page is rendered

    return vlc.javascript_bundle(vl_version=VL_VERSION)


def _json_in_script(text: str) -> str:
    """JSON safe inside <script>: '<\\/' is the same JSON string, and cannot end the element."""
    return text.replace("</", "<\\/")


def _js_in_script(text: str) -> str:
    """JavaScript safe inside <script>: only '</script' ends it ('<\\/script' means the
    same in strings and regular expressions); a blanket '</' rewrite would break regexes."""
    return re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE)


def _table_html(frame: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.iter_rows():
        cells = []
        for v in row:
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            text = f"{v:,}" if isinstance(v, int) else (f"{v:.4g}" if isinstance(v, float) else ("—" if v is None else str(v)))
            cells.append(f'<td class="num">{html.escape(text)}</td>' if num else f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="table-box"><table class="data"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _inline_code(text: str) -> str:
    """Escape, then show `backticked` words as code."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _frames_html(block: Frames) -> str:
    """A pair's filmstrips (scrolling sideways), then its animations in a closed <details>:
    images inlined as data: URLs, so the page stays one offline file."""
    strips, anims = [], []
    for caption, png, webp in block.strips:
        alt = html.escape(caption, quote=True)
        strips.append(f'<figure class="strip"><figcaption>{_inline_code(caption)}</figcaption>'
                      f'<div class="scroll"><img class="filmstrip" alt="{alt}" '
                      f'src="data:image/png;base64,{base64.b64encode(png).decode()}"></div></figure>')
        if webp:
            anims.append(f'<figure class="anim"><img class="animation" alt="{alt}" '
                         f'src="data:image/webp;base64,{base64.b64encode(webp).decode()}">'
                         f'<figcaption>{_inline_code(caption)}</figcaption></figure>')
    out = [f'<div class="frames" data-frames="{html.escape(block.name, quote=True)}">',
           f"<h3>{html.escape(block.title)}</h3>", *strips]
    if anims:
        out.append(f'<details><summary>Watch the rollouts</summary><div class="anims">{"".join(anims)}</div></details>')
    if block.caption:
        out.append(f'<p class="caption">{_inline_code(block.caption)}</p>')
    out.append("</div>")
    return "".join(out)


def render_page(title: str, meta: list[str], built: list[tuple]) -> str:
    """built: (Section, [Block]) pairs in report order."""
    toc = "".join(f'<li><a href="#{s.key}">{html.escape(s.title)}</a></li>' for s, _ in built)
    body = []
    for number, (sec, blocks) in enumerate(built, start=1):
        body.append(f'<section id="{sec.key}" data-section="{sec.key}">')
        body.append(f"<h2>{number}. {html.escape(sec.title)}</h2>")
        if sec.about:
            body.append(f'<p class="about">{_inline_code(sec.about)}</p>')
        for block in blocks:
            if isinstance(block, Note):
                body.append(f'<p class="note">{_inline_code(block.text)}</p>')
            elif isinstance(block, Table):
                body.append(_table_html(block.frame))
                if block.caption:
                    body.append(f'<p class="caption">{_inline_code(block.caption)}</p>')
            elif isinstance(block, Frames):
                body.append(_frames_html(block))
            elif isinstance(block, Figure):
                spec = json.dumps(block.chart.to_dict(), separators=(",", ":"), allow_nan=False)
                # ids "fig-…": a figure may share its name with its section
                body.append(f'<div class="figure" id="fig-{block.name}" data-figure-name="{block.name}"></div>')
                body.append(f'<script type="application/json" data-figure="fig-{block.name}">'
                            f'{_json_in_script(spec)}</script>')
                if block.caption:
                    body.append(f'<p class="caption">{_inline_code(block.caption)}</p>')
        body.append("</section>")
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta_html = "".join(f"<div>{_inline_code(m)}</div>" for m in meta + [f"generated {generated}"])
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title>"
        '<link rel="icon" href="data:,">'
        f"<style>{CSS}</style>"
        f"<script>{_js_in_script(vega_bundle())}</script>"
        "</head><body>"
        f"<h1>{html.escape(title)}</h1><div class=\"meta\">{meta_html}</div>"
        f"<nav><ol>{toc}</ol></nav>"
        + "\n".join(body)
        + f'<script type="application/json" id="embed-options">{json.dumps(EMBED_OPTIONS)}</script>'
        + f"<script>{LOADER}</script></body></html>\n"
    )
