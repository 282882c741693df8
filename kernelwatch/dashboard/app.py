"""The kernelwatch dashboard: a Dash app with one module per page under ``dashboard/pages``.

``kernelwatch dashboard`` and ``kernelwatch up`` call :func:`main`; tests and the load bench
call :func:`create_app` and serve it themselves.
"""

from __future__ import annotations

from pathlib import Path

import dash
from dash import dcc, html

from kernelwatch.core.settings import get_settings

HERE = Path(__file__).resolve().parent

NAV = (
    ("Overview", "/"),
    ("Curves", "/curves"),
    ("Compare", "/compare"),
    ("History", "/history"),
    ("Releases", "/release"),
    ("Roofline", "/roofline"),
    ("Speedup vs PyTorch", "/speedup"),
    ("Job", "/job"),
)


def create_app() -> dash.Dash:
    app = dash.Dash(
        "dashboard",
        use_pages=True,
        pages_folder=str(HERE / "pages"),
        assets_folder=str(HERE / "assets"),
        title="kernelwatch",
        # Pages build their controls from the URL, so some ids exist only on one page.
        suppress_callback_exceptions=True,
    )
    app.layout = html.Div(
        [
            html.Header(
                className="topbar",
                children=[
                    html.Span("kernelwatch", className="brand"),
                    html.Nav([dcc.Link(label, href=href, className="navlink")
                              for label, href in NAV]),
                ],
            ),
            html.Main(dash.page_container, className="content"),
        ]
    )
    return app


def main(host: str | None = None, port: int | None = None, debug: bool = False) -> None:
    settings = get_settings()
    app = create_app()
    app.run(host=host or settings.dashboard_host, port=port or settings.dashboard_port,
            debug=debug)


if __name__ == "__main__":
    main()
