"""The review page in a real browser: ``guardrail escalations serve`` in its own process, headless Chromium.

The image is displayed (decoded by the browser, natural width > 0), the stylesheet loads under the page's
Content-Security-Policy, and the reviewer's approval and rejection resume their threads with the right messages.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from guardrail.integrations import list_escalations, open_saver
from tests.support.browser import click_through, console_errors, headless_chromium, images_loaded, review_server
from tests.support.graphs import build_graph
from tests.support.integration import image_message

pytestmark = pytest.mark.slow

GRAPH = "tests.support.graphs:build_graph"


def start(db: Path, *threads: str) -> None:
    with open_saver(db, must_exist=False) as saver:
        graph = build_graph(saver)
        for thread in threads:
            graph.invoke({"messages": [image_message()]}, {"configurable": {"thread_id": thread}})


def last_message(db: Path, thread: str) -> str:
    with open_saver(db) as saver:
        state = build_graph(saver).get_state({"configurable": {"thread_id": thread}})
    return str(state.values["messages"][-1].content)


def test_a_reviewer_sees_the_image_then_approves_one_escalation_and_rejects_another(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    db = tmp_path / "agent.sqlite"
    start(db, "approve-me", "reject-me")
    with headless_chromium() as browser, review_server(db, "--graph", GRAPH) as url:
        browser.get(url)
        assert "?token=" not in browser.current_url  # the token became a cookie
        rows = browser.find_elements(By.CSS_SELECTOR, "tr.escalation")
        assert [r.get_attribute("data-thread") for r in rows] == ["approve-me", "reject-me"]
        assert all(width > 0 for width in images_loaded(browser, "img.thumb"))
        header = browser.find_element(By.TAG_NAME, "header")
        assert header.value_of_css_property("background-color") == "rgba(29, 35, 48, 1)"  # review.css loaded

        click_through(browser, rows[0].find_element(By.CSS_SELECTOR, "a.open"))
        assert images_loaded(browser, "img.image") == [16]  # the 16-pixel PNG of the question, decoded
        assert browser.find_element(By.ID, "perception").text == "v"
        assert browser.find_element(By.ID, "candidate").text == "green"
        assert len(browser.find_elements(By.CSS_SELECTOR, "#confidence meter")) == 3
        click_through(browser, browser.find_element(By.ID, "approve"))
        assert browser.find_element(By.ID, "notice").text == "Thread approve-me: approve; the agent has resumed."

        click_through(browser, browser.find_element(By.CSS_SELECTOR, 'tr[data-thread="reject-me"] a.open'))
        browser.find_element(By.ID, "reject-reason").send_keys("the shape is hidden")
        click_through(browser, browser.find_element(By.ID, "reject"))
        assert browser.find_element(By.ID, "notice").text == "Thread reject-me: reject; the agent has resumed."
        assert browser.find_element(By.ID, "empty").text == "No escalation is waiting for a review."
        assert console_errors(browser) == []

    assert last_message(db, "approve-me") == "green"
    assert last_message(db, "reject-me") == (
        "A human reviewer rejected the answer to this question: the shape is hidden. No answer is given."
    )
    with open_saver(db, read_only=True) as saver:
        assert list_escalations(saver) == []


def test_without_the_token_the_browser_gets_401_and_no_image(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    db = tmp_path / "agent.sqlite"
    start(db, "t-1")
    with headless_chromium() as browser, review_server(db, "--graph", GRAPH) as url:
        browser.get(url.split("?")[0])
        assert "401 Unauthorized" in browser.find_element(By.TAG_NAME, "body").text
    with open_saver(db, read_only=True) as saver:
        assert [p.thread_id for p in list_escalations(saver)] == ["t-1"]
