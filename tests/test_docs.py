"""The documentation site: it builds with warnings as errors (the `built_site` fixture), every
internal link and every public name's API entry resolves, and a real headless browser renders
the home page, an API page and a tutorial with their titles and figures.
"""

import functools
import html.parser
import http.server
import importlib
import json
import os
import re
import shutil
import threading
import urllib.parse
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.xdist_group("site")

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL = re.compile(r"^([a-z][a-z0-9+.-]*:|//)", re.I)  # http:, mailto:, data:, //host


class _Page(html.parser.HTMLParser):
    """A page's ids and the addresses it links to (href and src)."""

    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key):
                self.ids.add(attrs[key])
        for key in ("href", "src"):
            if attrs.get(key) is not None and not (tag == "a" and key == "src"):
                self.links.append(attrs[key])


@functools.cache
def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def api_modules() -> list[str]:
    """The modules docs/api/index.md lists for autosummary."""
    text = (ROOT / "docs" / "api" / "index.md").read_text()
    return re.findall(r"^\s+(tfnf(?:\.\w+)+)\s*$", text, flags=re.M)


def test_every_internal_link_and_anchor_resolves(built_site):
    pages = sorted(built_site.rglob("*.html"))
    assert len(pages) > 20, pages
    broken = []
    for page in pages:
        for link in parse(page).links:
            if not link or EXTERNAL.match(link):
                continue
            address, _, fragment = urllib.parse.unquote(link).partition("#")
            address = address.split("?")[0]
            target = (page.parent / address).resolve() if address else page
            if target.is_dir():
                target = target / "index.html"
            where = f"{page.relative_to(built_site)} -> {link}"
            if not target.is_file():
                broken.append(f"{where}: no such file")
            elif fragment and target.suffix == ".html" and fragment not in parse(target).ids:
                broken.append(f"{where}: no #{fragment} there")
    assert not broken, "\n".join(broken[:30])


def test_every_public_name_has_an_api_entry(built_site):
    listed = api_modules()
    packages = [p for p in sorted((ROOT / "tfnf").iterdir()) if p.name != "__pycache__"]
    public = {
        f"tfnf.{p.stem}" for p in packages if not p.name.startswith("_") and p.stem != "cli"
    } - {"tfnf.names", "tfnf.vae"}  # the command's names; a deprecated alias of tfnf.models
    assert public <= set(listed), f"modules missing from docs/api/index.md: {public - set(listed)}"
    ids = set().union(*(parse(page).ids for page in (built_site / "api").rglob("*.html")))
    missing = [
        f"{module}.{name}"
        for module in listed
        for name in importlib.import_module(module).__all__
        if f"{module}.{name}" not in ids
    ]
    assert not missing, f"public names without an API entry: {missing}"
    pages = {page.stem for page in (built_site / "api" / "generated").glob("*.html")}
    assert set(listed) <= pages, f"modules without a page: {set(listed) - pages}"


def test_benchmark_page_shows_the_recorded_figures(built_site):
    text = (built_site / "concepts" / "benchmarks.html").read_text(encoding="utf-8")
    records = json.loads((ROOT / "benchmarks" / "results" / "vae_mnist.json").read_text())
    newest = records[-1]
    assert f"{newest['nll']:.4g}" in text, "the newest Table 2 record is not on the page"
    for path in (ROOT / "benchmarks" / "results").glob("*.json"):
        assert f'<span class="pre">{path.name}</span>' in text, f"no table of {path.name}"


def notebook_title(stem: str) -> str:
    notebook = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    first = next(c for c in notebook.cells if c.cell_type == "markdown")
    return first.source.splitlines()[0].lstrip("# ").strip()


@pytest.fixture(scope="module")
def served(built_site):
    """The site over HTTP on 127.0.0.1, as README says to open it."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(built_site))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"
        if os.environ.get("TFNF_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.mark.parametrize(
    ("page", "title", "selector"),
    [
        ("index.html", "tfnf", "article img"),
        ("api/generated/tfnf.models.html", "tfnf.models", '[id="tfnf.models.NormalizingFlow"]'),
        ("tutorials/00_quickstart.html", notebook_title("00_quickstart"), "article img"),
    ],
    ids=["home", "api", "tutorial"],
)
def test_page_renders_in_a_headless_browser(served, page, title, selector):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium(),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            tab = browser.new_page()
            errors = []
            tab.on("pageerror", lambda error: errors.append(str(error)))
            response = tab.goto(f"{served}/{page}", wait_until="load")
            assert response.status == 200
            assert tab.title().startswith(title), tab.title()
            assert tab.locator("h1").first.inner_text().strip().rstrip("#¶").strip() == (
                title if page != "index.html" else "tfnf"
            )
            element = tab.locator(selector).first
            assert element.is_visible(), f"{selector} not shown on {page}"
            if selector.endswith("img"):
                width = element.evaluate("img => img.complete ? img.naturalWidth : 0")
                assert width > 100, f"the figure on {page} did not load ({width} px wide)"
            assert not errors, errors
        finally:
            browser.close()
