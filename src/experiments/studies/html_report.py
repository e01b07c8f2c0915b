"""One self-contained HTML file: inlined PNG figures (base64), tables, configs and command lines.

No external reference of any kind (no CDN, no fonts, no links, no scripts): it opens from disk in any
browser with no server and no network. Text that merely contains a URL (a config value) is written
with ``:&#47;&#47;`` so that the file holds no ``scheme://`` string at all.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
.note { background: #fff6dd; border-left: 4px solid #e0a800; padding: 0.4em 0.8em; margin: 0.3em 0; }
.verdict { background: #e8f4ff; border-left: 4px solid #2a7ae2; padding: 0.5em 0.8em; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; }
details { margin: 0.3em 0; } summary { cursor: pointer; font-family: monospace; }
"""


def esc(text: object) -> str:
    return html.escape(str(text)).replace("://", ":&#47;&#47;")


def png_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(headers: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


class HtmlReport:
    """Collects sections, then writes one file."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{esc(text)}</h2>")

    def paragraph(self, text: str, css: str | None = None) -> None:
        cls = f' class="{css}"' if css else ""
        self.parts.append(f"<p{cls}>{esc(text)}</p>")

    def figure(self, png: Path, caption: str) -> None:
        self.parts.append(f"<figure>{png_tag(png, caption)}<figcaption>{esc(caption)}</figcaption></figure>")

    def table(self, headers: list[str], body: list[list[str]]) -> None:
        self.parts.append(table(headers, body))

    def pre(self, text: str) -> None:
        self.parts.append(f"<pre>{esc(text)}</pre>")

    def details(self, summary: str, blocks: list[tuple[str, str]]) -> None:
        inner = "".join(f"<p><b>{esc(label)}</b></p><pre>{esc(text)}</pre>" for label, text in blocks)
        self.parts.append(f"<details><summary>{esc(summary)}</summary>{inner}</details>")

    def render(self) -> str:
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{esc(self.title)}</title><style>{_CSS}</style></head><body>"
                f"<h1>{esc(self.title)}</h1>" + "\n".join(self.parts) + "</body></html>\n")

    def write(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(), encoding="utf-8")
        return path
