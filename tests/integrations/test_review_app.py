"""The review page over a real SQLite checkpointer, through Starlette's test client: what it shows, how it resumes
threads, and what it refuses (no token, a foreign host, a forged form, an image that is not pending)."""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import markupsafe
import pytest
from langchain_core.messages import HumanMessage
from starlette.testclient import TestClient

from guardrail import ConfigurationError, InputError
from guardrail.integrations import ImageStore, guardrail_graph, list_escalations, open_saver
from guardrail.integrations.review_app import (
    ReviewServer,
    _host_name,
    _host_names,
    create_review_app,
    machine_host_names,
)
from tests.support.graphs import build_graph
from tests.support.integration import (
    escalate_as_before_images,
    image_message,
    later_escalation_guard,
    png_b64,
    png_bytes,
)

TOKEN = "test-token-0123456789abcdef"
BASE = "http://127.0.0.1:8765"
SHA = hashlib.sha256(png_bytes()).hexdigest()


def start(db: Path, *threads: str, message: HumanMessage | None = None) -> None:
    with open_saver(db, must_exist=False) as saver:
        graph = build_graph(saver)
        for thread in threads:
            graph.invoke({"messages": [message or image_message()]}, {"configurable": {"thread_id": thread}})


def pending(db: Path) -> dict[str, Any]:
    with open_saver(db, read_only=True) as saver:
        return {p.thread_id: p for p in list_escalations(saver)}


def final_message(db: Path, thread: str) -> str:
    with open_saver(db) as saver:
        state = build_graph(saver).get_state({"configurable": {"thread_id": thread}})
    return str(state.values["messages"][-1].content)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "agent.sqlite"
    start(path, "t-1", "t-2")
    return path


def client_for(db: Path, *, signed_in: bool = True) -> TestClient:
    client = TestClient(create_review_app(db, token=TOKEN, graph=build_graph), base_url=BASE, follow_redirects=False)
    if signed_in:
        assert client.get(f"/?token={TOKEN}").status_code == 303
    return client


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert match is not None
    return match.group(1)


def interrupt_id(db: Path, thread: str) -> str:
    return str(pending(db)[thread].interrupt_id)


# -- access ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/escalations/x"), ("POST", "/escalations/x"), ("GET", f"/images/{SHA}"),
     ("GET", "/review.css"), ("GET", "/nothing-here")],
)  # fmt: skip
def test_every_request_without_the_token_is_refused(db: Path, method: str, path: str) -> None:
    client = client_for(db, signed_in=False)
    for headers, cookies in (({}, {}), ({"Authorization": "token wrong"}, {}), ({}, {"guardrail-review-x": TOKEN})):
        client.cookies.clear()
        client.cookies.update(cookies)
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401
        assert "guardrail escalations serve" in response.text
    assert client.get(f"{path}?token=wrong").status_code == 401


def test_the_token_in_the_address_becomes_a_strict_http_only_cookie(db: Path) -> None:
    client = client_for(db, signed_in=False)
    response = client.get(f"/escalations/abc?token={TOKEN}&x=1")
    assert response.status_code == 303
    assert response.headers["location"] == "/escalations/abc?x=1"  # the token leaves the address bar
    cookie = response.headers["set-cookie"]
    assert TOKEN in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert client.get("/").status_code == 200
    assert client_for(db, signed_in=False).get("/", headers={"Authorization": f"token {TOKEN}"}).status_code == 200


def test_a_foreign_host_name_is_refused_even_with_the_token(db: Path) -> None:
    client = client_for(db)
    assert client.get("/", headers={"Host": "attacker.example:8765"}).status_code == 400
    assert client.get("/", headers={"Host": "localhost:8765"}).status_code == 200


def test_every_response_forbids_scripts_framing_sniffing_and_referrers(db: Path) -> None:
    client = client_for(db)
    for response in (client.get("/"), client_for(db, signed_in=False).get("/")):
        headers = response.headers
        assert headers["content-security-policy"].startswith("default-src 'none'; img-src 'self'")
        assert "script-src" not in headers["content-security-policy"]  # default-src 'none': no scripts at all
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
        assert headers["cache-control"] == "no-store"


# -- what it shows --------------------------------------------------------------------------------------------


def test_the_list_shows_every_pending_escalation(db: Path) -> None:
    page = client_for(db).get("/").text
    assert 'data-thread="t-1"' in page
    assert 'data-thread="t-2"' in page
    assert f'src="/images/{SHA}"' in page
    assert "both visual and reasoning confidence are low" in page


def test_an_escalation_shows_image_perception_reasoning_candidate_confidences_and_rule(db: Path) -> None:
    page = client_for(db).get(f"/escalations/{interrupt_id(db, 't-1')}").text
    assert f'<img class="image" src="/images/{SHA}"' in page
    assert '<p class="text" id="perception">v</p>' in page
    assert '<p class="text" id="reasoning">r</p>' in page
    assert '<p class="candidate" id="candidate">green</p>' in page
    assert page.count("<meter") == 3  # familiarity is unknown: no bar
    assert '<tr class="cause" data-component="overall">' in page
    assert '<code id="rule">rules[0] both-low</code>' in page
    assert 'id="approve"' in page


def test_the_rule_s_values_are_shown_where_it_fired_on_a_later_attempt(tmp_path: Path) -> None:
    db = tmp_path / "later.sqlite"
    with open_saver(db, must_exist=False) as saver:
        graph = guardrail_graph(later_escalation_guard(), checkpointer=saver)
        graph.invoke({"messages": [image_message()]}, {"configurable": {"thread_id": "t-l"}})
    page = client_for(db).get(f"/escalations/{interrupt_id(db, 't-l')}").text
    assert '<p class="candidate" id="candidate">red</p>' in page
    for component, candidate, decided in (("visual", "0.45", "0.30"), ("reasoning", "0.53", "0.35")):
        row = re.search(rf'<tr class="cause" data-component="{component}">(.*?)</tr>', page, re.S)
        assert row is not None
        assert f'<td class="number">{candidate}</td>' in row.group(1)
        assert f'which saw <span class="decided">{decided}</span> on the latest attempt' in row.group(1)


def test_an_escalation_on_the_only_attempt_shows_its_values_once(db: Path) -> None:
    page = client_for(db).get(f"/escalations/{interrupt_id(db, 't-1')}").text
    assert "tested by the rule that escalated</td>" in page
    assert "which saw" not in page


def test_model_text_is_escaped(tmp_path: Path) -> None:
    db = tmp_path / "agent.sqlite"
    start(db, "t-x", message=image_message(question="<script>alert(1)</script> colour?"))
    page = client_for(db).get(f"/escalations/{interrupt_id(db, 't-x')}").text
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; colour?" in page


# -- images ---------------------------------------------------------------------------------------------------


def test_a_pending_image_is_served_by_its_hash_and_nothing_else_is(db: Path, tmp_path: Path) -> None:
    client = client_for(db)
    response = client.get(f"/images/{SHA}")
    assert (response.status_code, response.headers["content-type"], response.content) == (200, "image/png", png_bytes())
    assert response.headers["x-content-type-options"] == "nosniff"
    other = tmp_path / "other.png"
    other.write_bytes(png_bytes((0, 0, 255)))
    not_pending = hashlib.sha256(other.read_bytes()).hexdigest()
    for path in (f"/images/{not_pending}", "/images/..%2F..%2Fetc%2Fpasswd", "/images/../../etc/passwd",
                 f"/images/{SHA.upper()}", f"/images/{other}"):  # fmt: skip
        assert client.get(path).status_code == 404, path


def test_an_image_changed_since_the_escalation_is_not_served(db: Path) -> None:
    stored = ImageStore.beside(db).path_for(SHA, "image/png")
    stored.write_bytes(png_bytes((0, 0, 255)))
    assert client_for(db).get(f"/images/{SHA}").status_code == 410
    stored.unlink()
    assert client_for(db).get(f"/images/{SHA}").status_code == 410


def test_an_image_whose_recorded_path_is_gone_is_found_by_hash_in_the_named_store(tmp_path: Path) -> None:
    db = tmp_path / "agent.sqlite"
    with open_saver(db, must_exist=False) as saver:  # agents kept their images in a shared folder
        build_graph(saver, str(tmp_path / "shared")).invoke(
            {"messages": [image_message()]}, {"configurable": {"thread_id": "t-1"}}
        )
    (tmp_path / "shared").rename(tmp_path / "mounted")  # seen under another path where the reviewer works
    assert client_for(db).get(f"/images/{SHA}").status_code == 410
    client = TestClient(
        create_review_app(db, token=TOKEN, graph=build_graph, images=tmp_path / "mounted"), base_url=BASE
    )
    assert client.get(f"/?token={TOKEN}").status_code == 200
    assert f'src="/images/{SHA}"' in client.get(f"/escalations/{interrupt_id(db, 't-1')}").text
    assert (client.get(f"/images/{SHA}").status_code, client.get(f"/images/{SHA}").content) == (200, png_bytes())
    (tmp_path / "mounted" / SHA[:2] / f"{SHA}.png").write_bytes(png_bytes((0, 0, 255)))
    assert client.get(f"/images/{SHA}").status_code == 410  # the store's copy must still have the recorded hash
    with pytest.raises(InputError, match=r"image store '.*nowhere' is not a folder"):
        create_review_app(db, token=TOKEN, images=tmp_path / "nowhere")


def test_a_file_that_is_not_a_raster_image_is_never_served(tmp_path: Path) -> None:
    svg = tmp_path / "scene.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    db = tmp_path / "agent.sqlite"
    message = HumanMessage(content=[{"type": "image", "url": str(svg)}, {"type": "text", "text": "What colour?"}])
    start(db, "t-svg", message=message)
    (image,) = pending(db)["t-svg"].images
    assert image["ref"] == str(svg)
    assert client_for(db).get(f"/images/{image['sha256']}").status_code == 415


def test_resolved_escalations_no_longer_expose_their_images(db: Path) -> None:
    client = client_for(db)
    for thread in ("t-1", "t-2"):
        page = client.get(f"/escalations/{interrupt_id(db, thread)}").text
        client.post(f"/escalations/{interrupt_id(db, thread)}", data={"csrf": csrf_of(page), "decision": "reject"})
    assert client.get(f"/images/{SHA}").status_code == 404


# -- decisions ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "final"),
    [
        ({"decision": "approve"}, "green"),
        ({"decision": "edit", "answer": "olive"}, "olive"),
        ({"decision": "answer", "answer": " teal "}, "teal"),
        ({"decision": "reject", "reason": "too blurred"}, "rejected the answer to this question: too blurred"),
        ({"decision": "reject", "reason": ""}, "rejected the answer to this question. No answer is given."),
    ],
)
def test_a_decision_resumes_the_thread_as_escalations_resolve_does(db: Path, form: dict[str, str], final: str) -> None:
    client = client_for(db)
    target = f"/escalations/{interrupt_id(db, 't-1')}"
    csrf = csrf_of(client.get(target).text)
    response = client.post(target, data={"csrf": csrf, **form})
    assert response.status_code == 303
    assert response.headers["location"] == f"/?resolved=t-1&decision={form['decision']}"
    assert final in final_message(db, "t-1")
    assert set(pending(db)) == {"t-2"}
    assert f"Thread t-1: {form['decision']}; the agent has resumed." in client.get(response.headers["location"]).text
    again = client.post(target, data={"csrf": csrf, **form})
    assert again.status_code == 409
    assert "no longer waiting" in again.text


def test_a_post_without_the_csrf_token_or_from_another_site_changes_nothing(db: Path) -> None:
    client = client_for(db)
    target = f"/escalations/{interrupt_id(db, 't-1')}"
    csrf = csrf_of(client.get(target).text)
    forged = [
        ({"decision": "approve"}, {}),
        ({"decision": "approve", "csrf": "0" * 64}, {}),
        ({"decision": "approve", "csrf": csrf}, {"Origin": "http://attacker.example"}),
        ({"decision": "approve", "csrf": csrf}, {"Origin": "null"}),
        ({"decision": "approve", "csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}),
    ]
    for data, headers in forged:
        assert client.post(target, data=data, headers=headers).status_code == 403
    assert set(pending(db)) == {"t-1", "t-2"}
    same_site = {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}
    assert client.post(target, data={"decision": "approve", "csrf": csrf}, headers=same_site).status_code == 303


def test_an_invalid_decision_is_shown_and_the_escalation_stays_pending(db: Path) -> None:
    client = client_for(db)
    target = f"/escalations/{interrupt_id(db, 't-1')}"
    csrf = csrf_of(client.get(target).text)
    for data in ({"decision": "edit", "answer": "  "}, {"decision": "maybe"}):
        response = client.post(target, data={"csrf": csrf, **data})
        assert response.status_code == 400
        assert 'id="error"' in response.text
        assert "invalid review decision" in response.text
    assert set(pending(db)) == {"t-1", "t-2"}


def test_an_escalation_saved_without_images_is_shown_and_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    escalate_as_before_images(monkeypatch)
    db = tmp_path / "old.sqlite"
    start(db, "t-old")
    client = client_for(db)
    target = f"/escalations/{interrupt_id(db, 't-old')}"
    page = client.get(target).text
    assert "This escalation names no image" in page
    assert '<span class="muted">no &lt;vision&gt; part</span>' in page
    assert client.post(target, data={"csrf": csrf_of(page), "decision": "approve"}).status_code == 303
    assert final_message(db, "t-old") == "green"


# -- a database that cannot be used now -----------------------------------------------------------------------


@contextmanager
def write_locked(db: Path) -> Iterator[None]:
    """Another process's write transaction on ``db`` (as an agent mid-checkpoint holds it): readers go on, a second
    writer waits for SQLite's busy timeout (5 s) and is told the database is locked."""
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
        holder.execute("ROLLBACK")
    finally:
        holder.close()


@contextmanager
def read_only(db: Path) -> Iterator[None]:
    """``db`` read-only for this process: permission bits, or as root (whom they do not stop) the immutable flag."""
    if os.geteuid() != 0:
        db.chmod(0o444)
        try:
            yield
        finally:
            db.chmod(0o644)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", db], check=False).returncode != 0:
        pytest.skip("running as root without chattr +i: no way to make a file read-only here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", db], check=True)


def escaped(text: str) -> str:
    return str(markupsafe.escape(text))


def test_a_locked_database_is_a_503_page_saying_why_and_nothing_changes(db: Path) -> None:
    # Issue 27, item 7: a bare HTTP 500, where `guardrail escalations resolve` says why (exit 2).
    client = client_for(db)
    target = f"/escalations/{interrupt_id(db, 't-1')}"
    csrf = csrf_of(client.get(target).text)
    with write_locked(db):
        assert client.get("/").status_code == 200  # reading goes on
        response = client.post(target, data={"csrf": csrf, "decision": "approve"})
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("text/html")
        assert escaped(f"checkpoint database {str(db)!r} cannot be used: database is locked") in response.text
        assert "The decision was not recorded: the escalation is still pending." in response.text
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        as_json = client.post(
            target, data={"csrf": csrf, "decision": "approve"}, headers={"Accept": "application/json"}
        )
        assert as_json.status_code == 503
        assert as_json.json() == {
            "error": f"checkpoint database {str(db)!r} cannot be used: database is locked",
            "status": 503,
        }
    assert set(pending(db)) == {"t-1", "t-2"}
    assert client.post(target, data={"csrf": csrf, "decision": "approve"}).status_code == 303  # unlocked: it works


def test_a_read_only_database_is_a_503_page_saying_why_and_nothing_changes(db: Path) -> None:
    client = client_for(db)
    target = f"/escalations/{interrupt_id(db, 't-1')}"
    csrf = csrf_of(client.get(target).text)
    with read_only(db):
        assert client.get("/").status_code == 200
        response = client.post(target, data={"csrf": csrf, "decision": "approve"})
        assert response.status_code == 503
        reason = f"checkpoint database {str(db)!r} cannot be used: attempt to write a readonly database"
        assert escaped(reason) in response.text
        assert 'id="unavailable"' in response.text
    assert set(pending(db)) == {"t-1", "t-2"}


def test_a_database_that_cannot_be_read_is_a_503_on_every_page(db: Path, tmp_path: Path) -> None:
    client = client_for(db)
    target = f"/escalations/{interrupt_id(db, 't-1')}"
    db.rename(tmp_path / "moved.sqlite")  # gone between requests
    reason = f"checkpoint database {str(db)!r} does not exist"
    for path in ("/", target):
        response = client.get(path)
        assert response.status_code == 503, path
        assert escaped(reason) in response.text
    image = client.get(f"/images/{SHA}")
    assert image.status_code == 503
    assert image.headers["content-type"].startswith("text/plain")
    assert image.text == f"503 Service Unavailable: {reason}"


# -- host names -----------------------------------------------------------------------------------------------


def test_bound_to_every_interface_it_answers_only_to_this_machines_names(db: Path) -> None:
    # Issue 27, item 7: bound to 0.0.0.0 it took any Host header (DNS rebinding), unlike the README's promise.
    server = ReviewServer(db, graph=build_graph, host="0.0.0.0", token=TOKEN, allowed_hosts=("review.example.org",))
    try:
        assert server.exposed
        names = server.host_names
        assert {"127.0.0.1", "localhost", "[::1]", socket.gethostname().lower(), "review.example.org"} <= set(names)
        assert set(machine_host_names()) <= set(names)
        client = TestClient(server.app, base_url=f"http://127.0.0.1:{server.port}", follow_redirects=False)
        assert client.get(f"/?token={TOKEN}").status_code == 303
        for name in names:
            host = f"{name}:{server.port}"
            assert client.get("/", headers={"Host": host}).status_code == 200, host
        for foreign in ("attacker.example", "attacker.example:80", "10.255.255.254", "[2001:db8::1]", ""):
            response = client.get("/", headers={"Host": foreign})
            assert response.status_code == 400, foreign
            assert response.text == "400 Bad Request: unexpected Host header"
    finally:
        server.socket.close()


def test_bound_to_one_address_it_answers_to_that_address_and_the_allowed_names(db: Path) -> None:
    assert _host_names("192.0.2.7", ("Review.Example.org", "::1", " ")) == ("192.0.2.7", "review.example.org", "[::1]")
    assert _host_names("2001:db8::7") == ("[2001:db8::7]",)
    loopback = ReviewServer(db, graph=build_graph)
    loopback.socket.close()
    assert loopback.host_names == ("127.0.0.1", "localhost", "[::1]")


# -- construction ---------------------------------------------------------------------------------------------


def test_the_app_refuses_a_foreign_database_a_bad_graph_and_a_short_token(tmp_path: Path, db: Path) -> None:
    foreign = tmp_path / "photo.png"
    foreign.write_bytes(png_bytes())
    with pytest.raises(InputError, match="is not a checkpoint database"):
        create_review_app(foreign, token=TOKEN)
    with pytest.raises(InputError, match="does not exist"):
        create_review_app(tmp_path / "missing.sqlite", token=TOKEN)
    with pytest.raises(ConfigurationError, match="cannot import graph factory module 'nowhere'"):
        create_review_app(db, token=TOKEN, graph="nowhere:f")
    with pytest.raises(ValueError, match="`token` must have at least 16 characters, got 5"):
        create_review_app(db, token="short")
    assert foreign.read_bytes() == png_bytes()


def test_a_server_binds_loopback_on_a_free_port_with_a_fresh_token(db: Path) -> None:
    server = ReviewServer(db, graph=build_graph)
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[\w-]{40,}", server.url)
        assert server.port > 0
        assert not server.exposed
        other = ReviewServer(db, graph=build_graph)
        assert other.token != server.token
        other.socket.close()
    finally:
        server.socket.close()


def test_host_names_are_read_without_the_port() -> None:
    assert _host_name("127.0.0.1:8765") == "127.0.0.1"
    assert _host_name("LOCALHOST") == "localhost"
    assert _host_name("[::1]:8765") == "[::1]"
    assert _host_name("[::1]") == "[::1]"


def test_without_the_review_extra_the_import_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "guardrail.integrations.review_app")
    monkeypatch.setitem(sys.modules, "starlette.applications", None)
    with pytest.raises(ImportError, match=r"pip install 'lvlm-guardrail\[review\]'"):
        importlib.import_module("guardrail.integrations.review_app")


def test_an_image_travelling_inline_is_served_from_its_data_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import guardrail.integrations.langgraph as langgraph

    monkeypatch.setattr(langgraph, "store_for_checkpointer", lambda checkpointer: None)
    db = tmp_path / "agent.sqlite"
    start(db, "t-inline")
    (image,) = pending(db)["t-inline"].images
    assert image["ref"] == f"data:image/png;base64,{png_b64()}"
    assert not ImageStore.beside(db).root.exists()
    response = client_for(db).get(f"/images/{SHA}")
    assert (response.status_code, response.content) == (200, png_bytes())
