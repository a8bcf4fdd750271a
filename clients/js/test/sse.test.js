// The Server-Sent Events fallback: `/events` when WebSocket is missing or blocked, its
// subscriptions fixed at connect (a change reconnects, resuming), its failures retried.
import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { connect } from "../sqla-notify.js";
import { FakeEventSource, FakeWebSocket, flush } from "./fakes.js";

beforeEach(() => {
  FakeWebSocket.reset();
  FakeEventSource.reset();
});

function start(t, options = {}) {
  const client = connect("wss://example.test/notify/ws?tenant=3", { EventSource: FakeEventSource, WebSocket: null, ...options });
  t.after(() => client.close());
  return client;
}

test("without WebSocket it streams /events with the same query, and delivers", async (t) => {
  const client = start(t, { lastId: "c1" });
  const got = [];
  client.subscribe("posts", { where: { forum_id: 7 } }, (n) => got.push(n.id));
  client.subscribe("forums", (n) => got.push(n.id));
  await flush();
  const es = FakeEventSource.last;
  assert.equal(es.url.origin + es.url.pathname, "https://example.test/notify/events");
  assert.equal(es.url.searchParams.get("tenant"), "3");
  assert.deepEqual(es.collections, [{ collection: "posts", where: { forum_id: [7] } }, "forums"]);
  assert.equal(es.lastId, "c1");
  es.open();
  es.receive({ type: "welcome", cursor: "c0", connection: "sse-1" });
  assert.equal(client.state, "open");
  assert.equal(client.transport, "sse");
  assert.equal(client.connection, "sse-1");
  es.receive({ id: "c2", collection: "forums", action: "insert", data: { id: 1 } });
  assert.deepEqual(got, ["c2"]);
  assert.equal(client.lastId, "c2");
});

test("changing subscriptions reconnects the stream, resuming from lastId", async (t) => {
  const client = start(t);
  client.subscribe("forums", () => {});
  await flush();
  const first = FakeEventSource.last;
  first.open();
  first.receive({ type: "welcome", cursor: "c0", connection: "x" });
  first.receive({ id: "c5", collection: "forums", action: "insert" });
  const off = client.subscribe("posts", () => {});
  await flush();
  assert.ok(first.closed);
  assert.equal(FakeEventSource.all.length, 2);
  assert.deepEqual(FakeEventSource.last.collections, ["forums", "posts"]);
  assert.equal(FakeEventSource.last.lastId, "c5");
  FakeEventSource.last.open();
  off();
  await flush();
  assert.deepEqual(FakeEventSource.last.collections, ["forums"]);
  assert.equal(FakeEventSource.all.length, 3);
});

test("since: the first position when the client has none", async (t) => {
  const client = start(t);
  client.subscribe("posts", { where: { forum_id: 7 }, since: "snap-1" }, () => {});
  await flush();
  assert.equal(FakeEventSource.last.lastId, "snap-1");
  assert.deepEqual(FakeEventSource.last.collections, [{ collection: "posts", where: { forum_id: [7] } }]);
  void client;
});

test("a failed stream is closed and retried with backoff, not by EventSource itself", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  t.mock.method(Math, "random", () => 1);
  const client = start(t, { minDelay: 100 });
  const states = [];
  client.onStateChange((s, d) => states.push([s, d?.code, d?.retryIn]));
  await flush();
  FakeEventSource.last.fail();
  assert.ok(FakeEventSource.all[0].closed);
  t.mock.timers.tick(200);
  await flush();
  assert.equal(FakeEventSource.all.length, 2);
  assert.deepEqual(states, [["connecting", 1006, 200]]);
});

test("expired: reconnects through auth soon after a stream that lasted", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  let calls = 0;
  const client = start(t, { minDelay: 100, stableAfter: 1000, auth: () => void calls++ });
  await flush();
  FakeEventSource.last.open();
  t.mock.timers.tick(5000);
  const states = [];
  client.onStateChange((s, d) => states.push([s, d?.code]));
  FakeEventSource.last.receive({ type: "expired" });
  assert.ok(FakeEventSource.last.closed);
  t.mock.timers.tick(100);
  await flush();
  assert.equal(calls, 2);
  assert.equal(FakeEventSource.all.length, 2);
  assert.deepEqual(states[0], ["connecting", 4401]);
});

test("goaway: the server is shutting down, so it reconnects at once with the last id", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  t.mock.method(Math, "random", () => 1);
  const client = start(t, { minDelay: 1000 });
  client.subscribe("forums", () => {});
  await flush();
  const states = [];
  client.onStateChange((s, d) => states.push([s, d?.code, d?.retryIn]));
  FakeEventSource.last.open();
  FakeEventSource.last.receive({ type: "welcome", cursor: "c0", connection: "x" });
  FakeEventSource.last.receive({ id: "c3", collection: "forums", action: "insert" });
  FakeEventSource.last.receive({ type: "goaway" });
  assert.ok(FakeEventSource.last.closed);
  assert.deepEqual(states.at(-1), ["connecting", 1001, 250]);
  t.mock.timers.tick(250);
  await flush();
  assert.equal(FakeEventSource.all.length, 2);
  assert.equal(FakeEventSource.last.lastId, "c3");
});

test("auto: after two WebSocket attempts that never open, SSE; kept once it opens", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  const client = start(t, { WebSocket: FakeWebSocket, minDelay: 10, maxDelay: 10 });
  client.subscribe("forums", () => {});
  const next = async () => {
    t.mock.timers.tick(10);
    await flush();
  };
  await flush();
  FakeWebSocket.last.drop(1006); // blocked by a proxy, say
  await next();
  FakeWebSocket.last.drop(1006);
  await next();
  assert.equal(FakeWebSocket.all.length, 2);
  assert.equal(FakeEventSource.all.length, 1, "third attempt: SSE");
  FakeEventSource.last.fail(); // the server is down altogether: back to WebSocket
  await next();
  assert.equal(FakeWebSocket.all.length, 3);
  FakeWebSocket.last.drop(1006);
  await next();
  assert.equal(FakeEventSource.all.length, 2);
  FakeEventSource.last.open();
  FakeEventSource.last.fail();
  await next();
  assert.equal(FakeEventSource.all.length, 3, "SSE opened while WebSocket never did: it stays");
  assert.equal(client.transport, "sse");
});

test("auto: a WebSocket that opened once is kept, whatever fails later", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  const client = start(t, { WebSocket: FakeWebSocket, minDelay: 10, maxDelay: 10 });
  await flush();
  FakeWebSocket.last.welcome();
  for (let i = 0; i < 4; i++) {
    FakeWebSocket.last.drop(1006);
    t.mock.timers.tick(10);
    await flush();
  }
  assert.equal(FakeEventSource.all.length, 0);
  assert.equal(client.transport, "websocket");
});

test("eventsUrl overrides the derived URL; a URL without /ws needs it", async (t) => {
  start(t, { eventsUrl: "https://example.test/stream" });
  await flush();
  assert.equal(FakeEventSource.last.url.pathname, "/stream");
  const reported = [];
  const saved = globalThis.reportError;
  globalThis.reportError = (err) => reported.push(err.message);
  t.after(() => (globalThis.reportError = saved));
  const client = connect("wss://example.test/socket", { EventSource: FakeEventSource, WebSocket: null });
  t.after(() => client.close());
  await flush();
  assert.match(reported[0], /cannot derive the SSE URL .* pass options.eventsUrl/);
});

test("since, once the client has a position: the stream resumes from lastId", async (t) => {
  const client = start(t);
  client.subscribe("forums", () => {});
  await flush();
  FakeEventSource.last.open();
  FakeEventSource.last.receive({ id: "c4", collection: "forums", action: "insert" });
  client.subscribe("posts", { since: "snap-1" }, () => {});
  await flush();
  assert.equal(FakeEventSource.all.length, 2);
  assert.equal(FakeEventSource.last.lastId, "c4");
  assert.deepEqual(FakeEventSource.last.collections, ["forums", "posts"]);
});
