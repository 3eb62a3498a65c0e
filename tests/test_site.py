"""`talkbench site`: the static leaderboard page, its tables checked against the result JSONs, and
the page driven in a real browser (headless Debian chromium through selenium) where one exists."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.cli import main
from bench.protocol import list_protocols, load_protocol
from core.paths import repo_root

COMMITTED = repo_root() / "results" / "synthtalk"


class Tables(HTMLParser):
    """table id -> rows -> cells as (data-value or None, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple]]] = {}
        self.table = self.cell = None
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.table = a.get("id")
            self.tables[self.table] = []
        elif tag == "tr" and self.table is not None:
            self.tables[self.table].append([])
        elif tag in ("td", "th") and self.table is not None:
            self.cell = [a.get("data-value"), ""]
        elif tag in ("a", "img"):
            self.links.append(a.get("href") or a.get("src"))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.tables[self.table][-1].append(tuple(self.cell))
            self.cell = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[1] += data


def parse(path: Path) -> Tables:
    p = Tables()
    p.feed(path.read_text())
    return p


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site of a copy of the committed synthtalk results (every other protocol: no results)."""
    if not (COMMITTED / "static.json").exists():
        pytest.fail(f"{COMMITTED} holds no results: the committed synthtalk results are part of the repository")
    root = tmp_path_factory.mktemp("results")
    shutil.copytree(COMMITTED, root / "synthtalk")
    assert main(["site", "--results", str(root)]) == 0
    return root, root / "site"


def test_index_lists_every_protocol(site):
    root, out = site
    rows = parse(out / "index.html").tables["protocols"][1:]
    assert [r[0][1] for r in rows] == list_protocols()
    counts = {r[0][1]: int(r[2][1]) for r in rows}
    assert counts["synthtalk"] == len([p for p in (root / "synthtalk").glob("*.json")
                                       if json.loads(p.read_text()).get("kind") == "method"])
    assert all(n == 0 for name, n in counts.items() if name != "synthtalk")
    assert all((out / f"{name}.html").exists() for name in list_protocols())


def test_results_table_is_the_result_jsons(site):
    root, out = site
    protocol = load_protocol("synthtalk")
    page = parse(out / "synthtalk.html")
    table = page.tables["results"]
    labels = [m.label for m in protocol.metrics]
    assert len(table[0]) == 1 + len(labels)
    shown = {r[0][1]: r[1:] for r in table[1:]}
    results = {p.stem: json.loads(p.read_text()) for p in (root / "synthtalk").glob("*.json")}
    rows = {name: r for name, r in results.items() if r.get("kind") == "method"}
    assert set(shown) == set(rows)
    for name, r in rows.items():
        for label, (value_attr, text) in zip(labels, shown[name]):
            m = r["metrics"][label]
            if m.get("unavailable"):
                assert text == "unavailable" and value_attr == ""
            elif m.get("not_applicable"):
                assert text == "n/a"
            elif m["value"] is None:
                assert value_attr == ""
            else:
                assert float(value_attr) == m["value"]
                assert text.startswith(f"{m['value']:.3f}") and f"N={m['n']}" in text
                lo, hi = m["ci"]
                if lo is not None:
                    assert f"[{lo:.3f}, {hi:.3f}]" in text
    # every result file and figure is linked, relative to the page, and exists
    for link in page.links:
        if not link.startswith(("http", "index.html")):
            assert (out / link).resolve().exists(), link
    assert {Path(l).name for l in page.links} >= {f"{n}.json" for n in results} | {"README.md"}


def test_paper_tables_show_the_transcribed_rows(site):
    _, out = site
    protocol = load_protocol("kfusion_t1_mead")
    page = parse(out / "kfusion_t1_mead.html")
    assert "results" not in page.tables  # no run yet: the paper table alone
    ref = protocol.reference_results[0]
    table = page.tables["paper-0"]
    body = [r for r in table[1:] if r[1 if not ref.get("setting_column") else 2][1] == "paper"]
    assert [r[0][1] for r in body] == [row["method"] for row in ref["rows"]]
    first = ref["rows"][0]["values"]
    cols = [c for c in (ref.get("columns") or list(first))]
    offset = 3 if ref.get("setting_column") else 2
    for col, (value_attr, _) in zip(cols, body[0][offset:]):
        if first.get(col) is not None:
            assert float(value_attr) == pytest.approx(first[col])


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no chromium + chromedriver on this machine (Debian packages chromium and "
                    "chromium-driver); the browser test runs where they are installed")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1800"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def test_page_in_a_real_browser_sorts_by_a_clicked_column(site, tmp_path):
    root, out = site
    browser = _browser()
    try:
        browser.get((out / "synthtalk.html").as_uri())
        from selenium.webdriver.common.by import By

        rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
        results = {p.stem: json.loads(p.read_text()) for p in (root / "synthtalk").glob("*.json")}
        methods = {n: r for n, r in results.items() if r.get("kind") == "method"}
        assert len(rows) == len(methods)
        labels = [m.label for m in load_protocol("synthtalk").metrics]
        col = labels.index("M-LD") + 1
        header = browser.find_elements(By.CSS_SELECTOR, "#results thead th")[col]
        assert header.text.startswith("M-LD")

        def column() -> list[tuple[str, str]]:
            return [(r.find_elements(By.TAG_NAME, "td")[0].text,
                     r.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-value"))
                    for r in browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")]

        header.click()
        ascending = column()
        values = [float(v) for _, v in ascending if v]
        assert values == sorted(values) and header.get_attribute("aria-sort") == "ascending"
        expected = sorted((r["metrics"]["M-LD"]["value"], n) for n, r in methods.items()
                          if r["metrics"]["M-LD"]["value"] is not None)
        assert [n for n, v in ascending if v] == [n for _, n in expected]
        header.click()
        descending = [float(v) for _, v in column() if v]
        assert descending == sorted(values, reverse=True)
        shot = tmp_path / "synthtalk.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        browser.quit()
