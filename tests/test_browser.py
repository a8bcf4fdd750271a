"""End to end in a real browser: examples/fastapi_app served by uvicorn, two headless Chromium pages.

Needs the ``playwright`` Python package and a Chromium binary (``/usr/bin/chromium``, Debian's
``chromium`` package, or the path in ``SQLA_NOTIFY_CHROMIUM``); Playwright's own browser
downloads are not used. Without either the test is skipped, except under ``CI=true``, where
that is a failure.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .support.services import require_service

try:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Page,
        expect,
        sync_playwright,
    )
    from playwright.sync_api import Error as PlaywrightError
except ImportError as exc:  # checked by the ``browser`` fixture
    PLAYWRIGHT_MISSING: str | None = f"{exc}; pip install playwright (its browser downloads are not needed)"
else:
    PLAYWRIGHT_MISSING = None

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SQLA_NOTIFY_CHROMIUM", "/usr/bin/chromium")
# The machine has no network: without these Chromium keeps trying (and failing) to reach Google.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
STARTUP_TIMEOUT = 15.0  # seconds for uvicorn to answer HTTP
WAIT = 15_000  # milliseconds, the bound of every wait in the browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ExampleServer:
    """examples/fastapi_app under uvicorn in a subprocess; stop() and start() again keep port and database."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "uvicorn.log"
        self.env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'example.db'}"}
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self._proc is None, "already running"
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [
                    sys.executable, "-m", "uvicorn", "examples.fastapi_app.app:app",
                    "--host", "127.0.0.1", "--port", str(self.port), "--ws-per-message-deflate", "false",
                ],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                pytest.fail(f"uvicorn exited with {self._proc.returncode}:\n{self.log()}", pytrace=False)
            try:
                if httpx.get(f"{self.base_url}/api/snapshot", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not answer within {STARTUP_TIMEOUT} s:\n{self.log()}", pytrace=False)
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()  # the router's shutdown hook closes open WebSockets (1001)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ExampleServer]:
    srv = ExampleServer(tmp_path)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    # A plain (sync) test and fixture: no event loop is running here, so the anyio plugin and
    # sync Playwright (which runs its own loop) do not meet.
    if PLAYWRIGHT_MISSING is not None:
        require_service("playwright", PLAYWRIGHT_MISSING)
    if not os.access(CHROMIUM, os.X_OK):
        require_service("Chromium", f"no executable {CHROMIUM} (apt-get install chromium, or set SQLA_NOTIFY_CHROMIUM)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Problem:
    page: str
    kind: str  # "console" or "pageerror"
    text: str
    url: str
    in_outage: bool


class Watch:
    """Console errors and uncaught exceptions of the pages, each marked with whether it came in
    while the server was (being) restarted."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.in_outage = False
        self.problems: list[Problem] = []
        # What Chromium logs for a refused (server down) or blocked (context offline) handshake.
        self.ws_failure = re.compile(
            rf"WebSocket connection to 'ws://127\.0\.0\.1:{port}/notify/ws\?[^']*' failed: "
            r"Error in connection establishment: net::ERR_(CONNECTION_REFUSED|INTERNET_DISCONNECTED)"
        )

    def attach(self, name: str, page: Page) -> None:
        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                self.problems.append(Problem(name, "console", msg.text, msg.location["url"], self.in_outage))

        def on_pageerror(error: PlaywrightError) -> None:
            self.problems.append(Problem(name, "pageerror", str(error), "", self.in_outage))

        page.on("console", on_console)
        page.on("pageerror", on_pageerror)

    def expected(self, p: Problem) -> bool:
        if p.kind != "console":
            return False
        return p.in_outage and self.ws_failure.fullmatch(p.text) is not None

    def unexpected(self) -> list[Problem]:
        return [p for p in self.problems if not self.expected(p)]


def open_page(context: BrowserContext, name: str, server: ExampleServer, watch: Watch) -> Page:
    page = context.new_page()
    page.set_default_timeout(WAIT)
    watch.attach(name, page)
    page.goto(server.base_url + "/")
    expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=WAIT)
    page.evaluate("window.__loadedOnce = true")  # gone if the page reloads
    return page


def starts(*names: str) -> list[re.Pattern[str]]:
    """Each <li> in order starts with the name (its buttons' labels follow)."""
    return [re.compile("^" + re.escape(n)) for n in names]


def test_two_pages_stay_in_sync_across_a_server_restart(browser: Browser, server: ExampleServer) -> None:
    watch = Watch(server.port)
    # Separate contexts, so that page B alone can be taken offline below.
    context_a, context_b = browser.new_context(), browser.new_context()
    a = open_page(context_a, "A", server, watch)
    b = open_page(context_b, "B", server, watch)

    # 1. A container and then a forum, through page A's forms.
    a.fill("#new-container input[name=name]", "Lobby")
    a.click("#new-container button")
    expect(a.locator("#containers li")).to_have_text(starts("Lobby"), timeout=WAIT)
    # The <select> is filled when the container's notification comes back to page A.
    expect(a.locator("#new-forum select option")).to_have_text(["Lobby"], timeout=WAIT)
    a.select_option("#new-forum select", label="Lobby")
    a.fill("#new-forum input[name=name]", "General")
    a.click("#new-forum button")

    # 2. Page B follows without reloading.
    expect(b.locator("#containers li")).to_have_text(starts("Lobby"), timeout=WAIT)
    expect(b.locator("#forums li .name")).to_have_text(["General"], timeout=WAIT)
    expect(b.locator("#forums li .meta")).to_have_text(["no posts yet"], timeout=WAIT)
    snap = httpx.get(f"{server.base_url}/api/snapshot", timeout=5).json()
    assert [c["name"] for c in snap["containers"]] == ["Lobby"]
    assert [(f["name"], f["container_id"]) for f in snap["forums"]] == [("General", snap["containers"][0]["id"])]
    container_id = snap["containers"][0]["id"]
    expect(b.locator("#containers li")).to_have_attribute("data-id", str(container_id), timeout=WAIT)
    expect(b.locator("#forums li")).to_have_attribute("data-id", str(snap["forums"][0]["id"]), timeout=WAIT)

    # 3. The server goes away: both pages see the connection drop.
    #    Page B is also taken offline, which holds back its reconnection (new handshakes fail
    #    with ERR_INTERNET_DISCONNECTED; Chromium leaves the open socket alone) until the forum
    #    below exists, so that it is certainly created while B is disconnected, whatever B's
    #    jittered backoff does.
    watch.in_outage = True
    context_b.set_offline(True)
    server.stop()
    expect(b.locator("#status")).to_have_attribute("data-state", "offline", timeout=WAIT)
    expect(a.locator("#status")).to_have_attribute("data-state", "offline", timeout=WAIT)

    # 4. A new server (a new hub, so a new cursor epoch) on the same port and database; a forum
    #    created through it while page B is still disconnected.
    server.start()
    response = httpx.post(
        f"{server.base_url}/api/forums", json={"name": "Missed", "container_id": container_id}, timeout=5
    )
    assert response.status_code == 201, response.text
    missed_id = response.json()["id"]
    context_b.set_offline(False)

    # 5. Page B reconnects by itself (its backoff is at most a few seconds here), is told to
    #    resync since its last_id is from the old hub, reloads and shows the missed forum.
    expect(b.locator("#status")).to_have_attribute("data-state", "open", timeout=WAIT)
    expect(b.locator("#forums li .name")).to_have_text(["General", "Missed"], timeout=WAIT)
    expect(b.locator("#forums li").nth(1)).to_have_attribute("data-id", str(missed_id), timeout=WAIT)
    expect(b.locator("#containers li")).to_have_text(starts("Lobby"), timeout=WAIT)
    expect(b.locator("#log")).to_contain_text("resync: reloading everything", timeout=WAIT)
    # Page A, which reconnected on its own schedule, agrees.
    expect(a.locator("#status")).to_have_attribute("data-state", "open", timeout=WAIT)
    expect(a.locator("#forums li .name")).to_have_text(["General", "Missed"], timeout=WAIT)
    watch.in_outage = False

    # Still the pages loaded at the start, and nothing went wrong in them.
    assert a.evaluate("window.__loadedOnce") is True
    assert b.evaluate("window.__loadedOnce") is True
    unexpected = watch.unexpected()
    assert not unexpected, "errors in the pages:\n" + "\n".join(map(str, unexpected))
    context_a.close()
    context_b.close()


def test_a_forum_page_shows_its_posts_live_and_a_moved_post_leaves(browser: Browser, server: ExampleServer) -> None:
    """The forum page subscribes to one forum's posts (``where``): a post moved away leaves
    it and enters the other forum's page; the tab that writes does not get its own change
    back (it shows it from the response), another tab on the same forum does."""
    watch = Watch(server.port)
    container = httpx.post(f"{server.base_url}/api/containers", json={"name": "Lobby"}).json()["id"]
    forum_ids = [
        httpx.post(f"{server.base_url}/api/forums", json={"name": name, "container_id": container}).json()["id"]
        for name in ("Cats", "Dogs")
    ]
    httpx.post(f"{server.base_url}/api/forums/{forum_ids[0]}/posts", json={"title": "Before the page"})
    context = browser.new_context()
    pages = []
    for name, forum in (("author", forum_ids[0]), ("reader", forum_ids[0]), ("dogs", forum_ids[1])):
        page = context.new_page()
        page.set_default_timeout(WAIT)
        watch.attach(name, page)
        page.goto(f"{server.base_url}/forum?id={forum}")
        expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=WAIT)
        pages.append(page)
    author, reader, dogs = pages
    expect(author.locator("#title")).to_have_text("Forum Cats")
    expect(author.locator("#posts li .name")).to_have_text(["Before the page"])
    expect(dogs.locator("#posts-empty")).to_have_text("No posts in this forum yet. Add the first one below.")

    # 1. A post added on the author's page: shown there from the response, live on the reader's.
    author.get_by_label("Post title").fill("Hello")
    author.get_by_role("button", name="Add post").click()
    expect(author.locator("#posts li .name")).to_have_text(["Before the page", "Hello"])
    expect(reader.locator("#posts li .name")).to_have_text(["Before the page", "Hello"])
    expect(reader.locator("#posts-count")).to_have_text("2 posts")
    expect(reader.locator("#log")).to_contain_text('"action":"insert"')

    # 2. Moved to Dogs from the author's page: it leaves both Cats pages, enters the Dogs page.
    author.get_by_label("Move post Hello to").select_option(label="Dogs")
    author.get_by_role("button", name="Move post Hello").click()
    expect(author.locator("#posts li .name")).to_have_text(["Before the page"])
    expect(reader.locator("#posts li .name")).to_have_text(["Before the page"])
    expect(reader.locator("#log")).to_contain_text('"move":"leave"')
    expect(dogs.locator("#posts li .name")).to_have_text(["Hello"])
    expect(dogs.locator("#log")).to_contain_text('"move":"enter"')

    # 3. Moved back by another client (no connection header): every page hears of it.
    post = dogs.locator("#posts li").first.get_attribute("data-id")
    httpx.patch(f"{server.base_url}/api/posts/{post}", json={"forum_id": forum_ids[0]}).raise_for_status()
    expect(dogs.locator("#posts li")).to_have_count(0)
    expect(author.locator("#posts li .name")).to_have_text(["Before the page", "Hello"])
    expect(reader.locator("#posts li .name")).to_have_text(["Before the page", "Hello"])

    # The author never received its own insert or move: only the move back, from outside.
    log = author.locator("#log").text_content() or ""
    assert '"action":"insert"' not in log and '"move":"leave"' not in log and '"move":"enter"' in log, log
    assert watch.unexpected() == []
    context.close()


def test_the_page_shows_empty_states_plurals_and_a_red_outage_with_writes_disabled(
    browser: Browser, server: ExampleServer
) -> None:
    """What a user of the example sees: empty lists say so, counts read as English ("1 post",
    "2 posts"); while the server is unreachable the status is red and counts down to the next
    attempt (the client's ``retryIn``) and every write is disabled, until it is back.
    With ``SQLA_NOTIFY_SCREENSHOTS=<dir>`` the test saves the page in each state there."""
    watch = Watch(server.port)
    context = browser.new_context(viewport={"width": 900, "height": 700})
    page = open_page(context, "A", server, watch)
    status = page.locator("#status")
    add_container = page.get_by_role("button", name="Add container")
    add_forum = page.get_by_role("button", name="Add forum")

    # 1. Empty: each list says so, and a forum cannot be added before a container exists.
    expect(status).to_have_text("Live")
    expect(page.locator("#containers-empty")).to_have_text("No containers yet. Add the first one below.")
    expect(page.locator("#forums-empty")).to_contain_text("add a container first")
    expect(page.locator("#containers li")).to_have_count(0)
    expect(page.locator("#log")).to_have_text("Nothing yet. Each committed change appears here.")
    expect(add_container).to_be_enabled()
    expect(add_forum).to_be_disabled()
    screenshot(page, "empty")

    # 2. Filled through the labelled form fields; counts and plurals follow the notifications.
    page.get_by_label("Container name").fill("Lobby")
    add_container.click()
    expect(page.locator("#containers-count")).to_have_text("1 container")
    expect(page.locator("#containers-empty")).to_be_hidden()
    expect(page.locator("#forums-empty")).to_have_text("No forums yet. Add the first one below.")
    page.get_by_label("Forum name").fill("General")
    expect(add_forum).to_be_enabled()
    add_forum.click()
    expect(page.locator("#forums-count")).to_have_text("1 forum")
    expect(page.locator("#forums-empty")).to_be_hidden()
    expect(page.locator("#forums li .meta")).to_have_text(["no posts yet"])
    add_post = page.get_by_role("button", name="Add a post to forum General")
    add_post.click()
    expect(page.locator("#forums li .meta")).to_have_text(["1 post"])
    add_post.click()
    expect(page.locator("#forums li .meta")).to_have_text(["2 posts"])
    page.get_by_label("Container name").fill("Archive")
    add_container.click()
    expect(page.locator("#containers-count")).to_have_text("2 containers")
    expect(page.locator("#outage")).to_be_hidden()
    screenshot(page, "normal")

    # 3. The server goes away: red, a countdown to the next attempt, and no control that writes.
    watch.in_outage = True
    server.stop()
    expect(status).to_have_attribute("data-state", "offline")
    expect(status).to_have_text(re.compile(r"Server unreachable · reconnecting in [1-9][0-9]* s"))
    expect(status).to_have_css("background-color", "rgb(180, 35, 24)")  # --bad
    expect(page.locator("#outage")).to_be_visible()
    writes = page.locator("#writes").locator("button, input, select")
    assert writes.count() == 9  # 2 forms of 2 and 3 controls, 2 delete buttons and 1 "+1 post"
    for control in writes.all():
        expect(control).to_be_disabled()
    screenshot(page, "outage")

    # 4. Back: green, writable again, and a write goes through. The client's backoff after a few
    #    failed attempts is at most several seconds, hence the longer wait.
    server.start()
    expect(status).to_have_attribute("data-state", "open", timeout=2 * WAIT)
    watch.in_outage = False
    expect(status).to_have_text("Live")
    expect(page.locator("#outage")).to_be_hidden()
    expect(add_container).to_be_enabled()
    expect(add_post).to_be_enabled()
    add_post.click()
    expect(page.locator("#forums li .meta")).to_have_text(["3 posts"])

    assert page.evaluate("window.__loadedOnce") is True
    unexpected = watch.unexpected()
    assert not unexpected, "errors in the page:\n" + "\n".join(map(str, unexpected))
    context.close()


def screenshot(page: Page, name: str) -> None:
    """Save the page as ``<name>.png`` in ``$SQLA_NOTIFY_SCREENSHOTS``, when that is set."""
    folder = os.environ.get("SQLA_NOTIFY_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_the_client_fetches_a_fresh_token_after_its_credentials_expire(browser: Browser, tmp_path: Path) -> None:
    """tests/server_app.py issues tokens that expire; the page's ``auth`` callback asks for one
    before every connection. The first lives one second: the server closes with 4401, the
    client calls ``auth`` again and is back, as alice, with the new token."""
    from .support.servers import Server  # tests/server_app.py, with its token issuer

    server = Server(tmp_path, UVICORN_ARGS="--log-level info")  # the access log is on
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT)
        problems: list[str] = []
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        urls: list[str] = []
        page.on("websocket", lambda ws: urls.append(ws.url))
        page.goto(f"{server.base}/page")
        page.evaluate("""async () => {
            const { connect } = await import("/notify/sqla-notify.js");
            Object.assign(window, { tokens: [], states: [], received: [] });
            window.client = connect("/notify/ws", {
                minDelay: 100,
                auth: async () => {
                    const ttl = window.tokens.length === 0 ? 1 : 60;  // the first expires soon
                    const response = await fetch(`/tokens?name=alice&ttl=${ttl}`, { method: "POST" });
                    const { token } = await response.json();
                    window.tokens.push(token);
                    return { token };
                },
            });
            client.onStateChange((state, detail) => window.states.push([state, detail?.code ?? null]));
            client.subscribe("forums", (n) => window.received.push(n.data.name));
        }""")
        page.wait_for_function("window.tokens.length === 2 && window.client.state === 'open'", timeout=WAIT)
        tokens = page.evaluate("window.tokens")
        assert tokens[0] != tokens[1]
        assert page.evaluate("window.states") == [["open", None], ["connecting", 4401], ["open", None]]
        # The server authenticated the first token, then the fresh one: nothing else.
        assert httpx.get(f"{server.base}/tokens/seen", timeout=5).json() == tokens
        # Still alice: her private forums reach her.
        httpx.post(f"{server.base}/burst", params={"count": 1, "name": "private-alice"}, timeout=5)
        page.wait_for_function("window.received.includes('private-alice')", timeout=WAIT)
        assert len(urls) == 2 and not [u for u in urls for t in tokens if t in u], urls
        assert not problems, problems
    finally:
        context.close()
        server.stop()
    log = server.log.read_text()
    assert log.count('"WebSocket /notify/ws?collections=forums') == 2 and log.count("[accepted]") == 2, log
    assert not [t for t in tokens if t in log], log


def test_where_websocket_is_blocked_the_client_falls_back_to_server_sent_events(
    browser: Browser, server: ExampleServer
) -> None:
    """A WebSocket that never opens (as behind a proxy that blocks the upgrade) makes the
    client try ``/events`` after two attempts; it keeps that stream, and a new subscription
    reconnects it with the new set, resuming from the last id."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT)
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        streams: list[str] = []
        page.on("request", lambda request: streams.append(request.url) if "/notify/events" in request.url else None)
        page.goto(server.base_url + "/")
        page.evaluate("""async () => {
            const { connect } = await import("/notify/sqla-notify.js");
            class Blocked {  // closes without ever opening, like a refused upgrade
                constructor() { this.readyState = 0; setTimeout(() => this.onclose?.({ code: 1006, reason: "" }), 0); }
                close() {}
            }
            window.received = [];
            window.sse = connect("/notify/ws", { WebSocket: Blocked, minDelay: 10, maxDelay: 20 });
            sse.subscribe("containers", (n) => received.push(["containers", n.action]));
        }""")
        page.wait_for_function("window.sse.state === 'open' && window.sse.transport === 'sse'", timeout=WAIT)
        httpx.post(f"{server.base_url}/api/containers", json={"name": "Lobby"}, timeout=5)
        page.wait_for_function("window.received.length === 1", timeout=WAIT)
        page.evaluate("""() => sse.subscribe("forums", (n) => received.push(["forums", n.action]))""")
        page.wait_for_function("window.sse.state === 'open' && window.sse.connection !== null", timeout=WAIT)
        container = httpx.get(f"{server.base_url}/api/containers", timeout=5).json()[0]["id"]
        httpx.post(f"{server.base_url}/api/forums", json={"name": "General", "container_id": container}, timeout=5)
        page.wait_for_function("window.received.length === 2", timeout=WAIT)
        assert page.evaluate("window.received") == [["containers", "insert"], ["forums", "insert"]]
        assert len(streams) == 2 and "collections=containers" in streams[0], streams
        assert "collections=containers,forums" in streams[1] and "last_id=" in streams[1], streams
        assert not problems, problems
    finally:
        context.close()
