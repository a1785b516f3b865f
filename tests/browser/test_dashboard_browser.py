"""The dashboard in a real browser against a real pipeline (broker, worker, Milvus, Redis).

Loads the page with no console errors, sees a burst in the trends panel and searches inside
it with a click, runs a text search and sees thumbnails, creates
a standing query from the search box, produces a matching post through Kafka and sees
it appear in the page within 5 s. With ``CROSSFEED_SCREENSHOT=<path>`` it also saves a
screenshot of the page at the end (``make screenshot`` writes docs/dashboard.png).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPICS = [
    ("sunny beach holiday with big waves", ["beach", "travel"]),
    ("cute cat sleeping on the sofa", ["cats"]),
    ("fresh bread from the village bakery", ["food"]),
    ("red vintage car at the show", ["cars"]),
    ("green forest hiking trail", ["nature"]),
    ("city skyline lights at night", ["city"]),
]


def _wait(predicate: Any, timeout: float, what: str, poll: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _searchable(dep: Any, text: str, post_id: str) -> bool:
    r = httpx.post(f"{dep.url}/v1/search", json={"text": text, "top_k": 30}, timeout=10)
    return r.status_code == 200 and post_id in [h["id"] for h in r.json()["results"]]


def _console_errors(driver: Any) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def test_dashboard_search_watch_and_live_match(
    deployment: Any, browser: Any, make_pictures: Any
) -> None:
    from selenium.webdriver.common.by import By

    dep = deployment
    images = make_pictures(3 * len(TOPICS))
    posts = []
    for i, image in enumerate(images):
        text, tags = TOPICS[i % len(TOPICS)]
        posts.append(dep.post(f"p{i}", f"{text} #{tags[0]} ({i})", image, tags=tags))
    # A burst: 14 accounts on one new tag (one account alone would be no trend; a new tag in
    # one window must clear the detector's single-window bar, 11 authors now).
    parade = [
        dep.post(f"parade{i}", f"drums and costumes downtown {i} #StreetParade", author=f"@fan{i}")
        for i in range(14)
    ]
    posts += parade
    dep.produce([*posts, b'{"id": "broken", "text": '])  # and one dead letter
    last = posts[-1]
    _wait(
        lambda: _searchable(dep, last["text"], last["id"]) or dep.worker.poll() is not None,
        180,
        "the first posts to be indexed",
        poll=0.5,
    )
    assert dep.worker.poll() is None, dep.worker_log()

    driver = browser
    driver.get(f"{dep.url}/")
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#stage-rows tr"), 15, "health panel")

    # Trends: the burst is listed (the panel refreshes itself); a click searches inside it.
    def burst_listed() -> bool:
        r = httpx.get(f"{dep.url}/v1/trends", timeout=10)
        assert r.status_code == 200, r.text
        return "h:street parade" in [t["id"] for t in r.json()["trends"]]

    _wait(burst_listed, 30, "the burst in /v1/trends", poll=0.5)
    trend = "#trend-list li.trend"
    try:
        _wait(
            lambda: any(
                "street parade" in li.text for li in driver.find_elements(By.CSS_SELECTOR, trend)
            ),
            15,  # the panel refreshes every 10 s
            "the burst in the trends panel",
            poll=0.5,
        )
    except AssertionError as exc:
        panel = driver.find_element(By.ID, "trends").get_attribute("outerHTML")
        raise AssertionError(f"{exc}\npanel: {panel}\nconsole: {_console_errors(driver)}") from exc
    assert driver.find_element(By.ID, "trends").get_attribute("hidden") is None
    item = next(
        li for li in driver.find_elements(By.CSS_SELECTOR, trend) if "street parade" in li.text
    )
    item.click()
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#results .card"), 10, "trend results")
    shown = {
        c.get_attribute("data-post")
        for c in driver.find_elements(By.CSS_SELECTOR, "#results .card")
    }
    assert shown and shown <= {p["id"] for p in parade}, shown
    driver.find_element(By.ID, "q").clear()

    # A text search shows a grid of thumbnails that really loaded.
    driver.find_element(By.ID, "q").send_keys("cute cat sleeping")
    driver.find_element(By.ID, "search-btn").click()
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#results .card"), 10, "results")

    def thumbnails_loaded() -> int:
        return int(
            driver.execute_script(
                "return [...document.querySelectorAll('#results .card img')]"
                ".filter(i => i.complete && i.naturalWidth > 0).length"
            )
        )

    assert _wait(thumbnails_loaded, 10, "thumbnails") >= 3
    first = driver.find_element(By.CSS_SELECTOR, "#results .card").get_attribute("data-post")
    assert "cat" in next(p["text"] for p in posts if p["id"] == first)

    # Watch: a standing query from the search box.
    driver.find_element(By.ID, "q").clear()
    driver.find_element(By.ID, "q").send_keys("volcano eruption lava")
    score = driver.find_element(By.ID, "min-score")
    score.clear()
    score.send_keys("0.6")
    driver.find_element(By.ID, "watch-btn").click()
    _wait(
        lambda: "watching" in driver.find_element(By.ID, "watch-status").text,
        10,
        "the event stream to open",
    )
    subs = httpx.get(f"{dep.url}/v1/subscriptions").json()["subscriptions"]
    assert [s["query"]["text"] for s in subs] == ["volcano eruption lava"]

    # A matching post through Kafka appears in the page within 5 s; a non-matching one not.
    [volcano] = make_pictures(1)
    hot = dep.post("hot", "volcano eruption lava tonight #volcano", volcano, tags=["volcano"])
    cold = dep.post("cold", "quiet library reading room", None)
    sent = dep.produce([cold, hot])
    selector = f"#matches .card[data-post='{hot['id']}']"
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, selector), 5.0, "the live match")
    print(f"\nproduce -> in the page: {time.monotonic() - sent:.2f} s")
    assert not driver.find_elements(By.CSS_SELECTOR, f"#matches .card[data-post='{cold['id']}']")
    assert _wait(
        lambda: driver.execute_script(
            f'const i = document.querySelector("{selector} img");'
            "return i && i.complete && i.naturalWidth > 0"
        ),
        5,
        "the match's thumbnail",
    )

    # The health panel shows the traffic and the dead letter.
    _wait(
        lambda: "parse" in driver.find_element(By.ID, "dead-rows").text,
        15,
        "the dead letter in the health panel",
    )
    assert _console_errors(driver) == []

    shot = os.environ.get("CROSSFEED_SCREENSHOT")
    if shot:
        driver.find_element(By.ID, "q").clear()
        driver.find_element(By.ID, "q").send_keys("cute cat sleeping")
        driver.find_element(By.ID, "search-btn").click()
        _wait(thumbnails_loaded, 10, "thumbnails for the screenshot")
        time.sleep(2.5)  # one more stats event, so the sparklines show the traffic
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1400, max(900, int(height) + 40))
        assert driver.save_screenshot(shot), f"could not write {shot}"
