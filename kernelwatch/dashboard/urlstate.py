"""A view's state lives in its URL's query string, both ways:

- URL -> controls: each page's ``layout(**query)`` (Dash pages pass the query parameters)
  builds its controls with those values, so opening a shared link restores the view.
- controls -> URL: the page's main callback also returns the query string for the current
  state into a ``dcc.Store`` (``<page>-search``); a clientside callback writes it into the
  address bar with ``history.replaceState``. replaceState (not a ``dcc.Location`` update) on
  purpose: a Location update makes the pages router rebuild the whole page on every click.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from dash import Input, Output, clientside_callback, dcc, html


def as_list(value: Any) -> list[str]:
    """``a,b,c`` (or a list) -> ["a", "b", "c"]; empty -> []."""
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v not in (None, "")]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def as_ints(value: Any) -> list[int]:
    return [int(v) for v in as_list(value) if v.lstrip("-").isdigit()]


def as_int(value: Any) -> int | None:
    ints = as_ints(value)
    return ints[0] if ints else None


def search_string(state: dict[str, Any]) -> str:
    """``?k=v&...`` for the non-empty entries, in the given order (lists comma-joined)."""
    pairs = []
    for key, value in state.items():
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        pairs.append((key, str(value)))
    return "?" + urlencode(pairs, safe=",/") if pairs else ""


def url_sync(prefix: str) -> html.Div:
    """The components a page adds to keep its URL in step (see module docstring)."""
    return html.Div([dcc.Store(id=f"{prefix}-search"), html.Div(id=f"{prefix}-url-sink",
                                                                 hidden=True)])


def register_url_sync(prefix: str) -> None:
    clientside_callback(
        """
        function(search) {
            if (typeof search !== 'string') { return window.dash_clientside.no_update; }
            if (window.location.search !== search) {
                window.history.replaceState(null, '', window.location.pathname + search);
            }
            return search;
        }
        """,
        Output(f"{prefix}-url-sink", "title"),
        Input(f"{prefix}-search", "data"),
    )
