// The connection: handshake, backoff with jitter, resubscribing and resuming after a drop,
// resync, state changes, unsubscribing. Run with `node --test` (clients/js/).
import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { ALL, connect } from "../sqla-notify.js";
import { FakeWebSocket, flush } from "./fakes.js";

beforeEach(() => FakeWebSocket.reset());

function start(t, options = {}) {
  const client = connect("ws://example.test/notify/ws", { WebSocket: FakeWebSocket, EventSource: null, ...options });
  t.after(() => client.close());
  return client;
}

test("subscriptions made right after connect() go into the first handshake", async (t) => {
  const client = start(t);
  client.subscribe("forums", () => {});
  client.subscribe("posts", () => {});
  await flush();
  assert.equal(FakeWebSocket.all.length, 1);
  assert.deepEqual(FakeWebSocket.last.collections, ["forums", "posts"]);
  assert.equal(FakeWebSocket.last.url.search, "?collections=forums,posts"); // literal commas
  assert.equal(FakeWebSocket.last.lastId, null);
  assert.deepEqual(client.collections, ["forums", "posts"]);
});

test("a callback on \"*\" connects without collections, for everything", async (t) => {
  const client = start(t);
  client.subscribe(ALL, () => {});
  await flush();
  assert.equal(FakeWebSocket.last.collections, null);
  assert.equal(client.collections, null);
});

test("subscribe and unsubscribe while open send one batched message each", async (t) => {
  const client = start(t);
  await flush();
  const ws = FakeWebSocket.last;
  assert.deepEqual(ws.collections, []);
  ws.welcome();
  const offA = client.subscribe("a", () => {});
  const offB = client.subscribe("b", () => {});
  const offA2 = client.subscribe("a", () => {}); // shares the server subscription
  await flush();
  assert.deepEqual(ws.sent, [{ type: "subscribe", collections: ["a", "b"] }]);
  offA();
  offA(); // twice: nothing more
  await flush();
  assert.equal(ws.sent.length, 1, "a still has a callback");
  offA2();
  offB();
  await flush();
  assert.deepEqual(ws.sent.at(-1), { type: "unsubscribe", collections: ["a", "b"] });
  assert.deepEqual(client.collections, []);
});

test("notifications reach the callbacks of their collection and of \"*\", and move lastId", async (t) => {
  const client = start(t);
  const got = [];
  client.subscribe("forums", (n) => got.push(["forums", n.id, client.lastId]));
  client.subscribe(ALL, (n) => got.push(["*", n.id]));
  client.subscribe("posts", (n) => got.push(["posts", n.id]));
  await flush();
  FakeWebSocket.last.welcome("c0");
  assert.equal(client.lastId, "c0");
  FakeWebSocket.last.receive({ id: "c1", collection: "forums", action: "insert", data: { id: 1 } });
  assert.deepEqual(got, [["forums", "c1", "c1"], ["*", "c1"]]);
  assert.equal(client.lastId, "c1");
});

test("a callback that throws does not stop the others", async (t) => {
  const client = start(t);
  const reported = [];
  const saved = globalThis.reportError; // Node 22 has one; Node 20 does not (console.error)
  globalThis.reportError = (err) => reported.push(err.message);
  t.after(() => (globalThis.reportError = saved));
  const got = [];
  client.subscribe("forums", () => {
    throw new Error("boom");
  });
  client.subscribe("forums", (n) => got.push(n.id));
  await flush();
  FakeWebSocket.last.welcome();
  FakeWebSocket.last.receive({ id: "c1", collection: "forums", action: "insert" });
  assert.deepEqual(got, ["c1"]);
  assert.deepEqual(reported, ["boom"]);
});

test("backoff: full jitter between minDelay and a cap that doubles up to maxDelay", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  const client = start(t, { minDelay: 500, maxDelay: 3000 });
  const delays = [];
  client.onStateChange((state, detail) => detail?.retryIn !== undefined && delays.push(detail.retryIn));
  for (const random of [1, 1, 1, 1, 0, 0.5]) {
    t.mock.method(Math, "random", () => random);
    await flush();
    FakeWebSocket.last.drop(1006); // fails at once, without opening
    t.mock.timers.tick(delays.at(-1));
  }
  // caps 1000, 2000, 3000 (maxDelay), 3000; then random 0 -> minDelay, 0.5 -> halfway.
  assert.deepEqual(delays, [1000, 2000, 3000, 3000, 500, 1750]);
  assert.equal(FakeWebSocket.all.length, 7);
});

test("a connection that stayed up stableAfter resets the backoff; 1013 does not", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  t.mock.method(Math, "random", () => 1);
  const client = start(t, { minDelay: 100, maxDelay: 10000, stableAfter: 1000 });
  const delays = [];
  client.onStateChange((state, detail) => detail?.retryIn !== undefined && delays.push(detail.retryIn));
  await flush();
  FakeWebSocket.last.drop();
  t.mock.timers.tick(200);
  await flush();
  FakeWebSocket.last.drop();
  t.mock.timers.tick(400);
  await flush();
  FakeWebSocket.last.welcome();
  t.mock.timers.tick(1000); // stable
  FakeWebSocket.last.drop(1006);
  t.mock.timers.tick(200);
  await flush();
  FakeWebSocket.last.welcome();
  t.mock.timers.tick(1000);
  FakeWebSocket.last.drop(1013); // too slow: no reset
  assert.deepEqual(delays, [200, 400, 200, 400]);
});

for (const code of [1001, 1012]) {
  test(`a server that served us and goes away (${code}): back at once, within 250 ms, with the last id`, async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
    const client = start(t, { minDelay: 1000, maxDelay: 30000 });
    client.subscribe("forums", () => {});
    const delays = [];
    client.onStateChange((state, detail) => detail?.retryIn !== undefined && delays.push([detail.code, detail.retryIn]));
    // A backoff that grew first: the move does not wait for it.
    t.mock.method(Math, "random", () => 1);
    for (let i = 0; i < 3; i++) {
      await flush();
      FakeWebSocket.last.drop(1006);
      t.mock.timers.tick(delays.at(-1)[1]);
    }
    await flush();
    FakeWebSocket.last.welcome();
    FakeWebSocket.last.receive({ id: "c7", collection: "forums", action: "insert" });
    FakeWebSocket.last.drop(code, "going away");
    assert.deepEqual(delays.at(-1), [code, 250]); // the most jitter: 250 ms
    t.mock.timers.tick(249);
    await flush();
    assert.equal(FakeWebSocket.all.length, 4, "not before its time");
    t.mock.timers.tick(1);
    await flush();
    assert.equal(FakeWebSocket.all.length, 5);
    assert.equal(FakeWebSocket.last.lastId, "c7");
    assert.deepEqual(FakeWebSocket.last.collections, ["forums"]);
    // The jitter is uniform from 0: random() = 0 reconnects in the same tick.
    t.mock.method(Math, "random", () => 0);
    FakeWebSocket.last.welcome();
    FakeWebSocket.last.drop(code);
    assert.deepEqual(delays.at(-1), [code, 0]);
    // And the backoff starts over: the next failure waits at most minDelay * 4.
    t.mock.timers.tick(0);
    await flush();
    t.mock.method(Math, "random", () => 1);
    FakeWebSocket.last.drop(1006);
    assert.deepEqual(delays.at(-1), [1006, 4000]);
  });
}

test("a server that goes away before its welcome (draining) is retried with the usual backoff", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  t.mock.method(Math, "random", () => 0);
  const client = start(t, { minDelay: 500 });
  const delays = [];
  client.onStateChange((state, detail) => detail?.retryIn !== undefined && delays.push(detail.retryIn));
  await flush();
  FakeWebSocket.last.open();
  FakeWebSocket.last.drop(1001);
  assert.deepEqual(delays, [500]);
});

test("after a drop it reconnects with every current subscription and resumes from the last id", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  const client = start(t, { minDelay: 10 });
  const got = [];
  client.subscribe("forums", (n) => got.push(n.id));
  await flush();
  FakeWebSocket.last.welcome("c0");
  FakeWebSocket.last.receive({ id: "c7", collection: "forums", action: "update", data: { id: 1 } });
  FakeWebSocket.last.drop(1001, "going away");
  client.subscribe("posts", () => {}); // while disconnected: goes into the next handshake
  await flush();
  t.mock.timers.tick(20);
  await flush();
  const ws = FakeWebSocket.last;
  assert.equal(FakeWebSocket.all.length, 2);
  assert.deepEqual(ws.collections, ["forums", "posts"]);
  assert.equal(ws.lastId, "c7");
  ws.welcome("c9"); // resuming: our own id stays
  assert.equal(client.lastId, "c7");
  ws.receive({ id: "c8", collection: "forums", action: "delete", data: { id: 1 } });
  assert.deepEqual(got, ["c7", "c8"]);
  assert.deepEqual(ws.sent, [], "nothing to send: the handshake had it all");
});

test("options.lastId resumes the first connection", async (t) => {
  start(t, { lastId: "snap-3" }).subscribe("forums", () => {});
  await flush();
  assert.equal(FakeWebSocket.last.lastId, "snap-3");
});

test("resync: lastId moves to its cursor, and the listeners reload", async (t) => {
  const client = start(t);
  const resyncs = [];
  client.onResync((m) => resyncs.push([m.cursor, m.reason, client.lastId]));
  await flush();
  FakeWebSocket.last.welcome("c0");
  FakeWebSocket.last.receive({ type: "resync", cursor: "c42", reason: "too slow" });
  assert.deepEqual(resyncs, [["c42", "too slow", "c42"]]);
});

test("resync without a listener warns", async (t) => {
  const client = start(t);
  const warned = t.mock.method(console, "warn", () => {});
  await flush();
  FakeWebSocket.last.welcome("c0");
  FakeWebSocket.last.receive({ type: "resync", cursor: "c5", reason: "cannot replay" });
  assert.equal(client.lastId, "c5");
  assert.match(warned.mock.calls[0].arguments[0], /cannot replay.*onResync/);
});

test("state changes: connecting, open, connecting with the close code, closed for good on 1008", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  t.mock.method(Math, "random", () => 0);
  const client = start(t, { minDelay: 50 });
  const states = [];
  client.onStateChange((state, detail) => states.push([state, detail?.code, detail?.retryIn]));
  assert.equal(client.state, "connecting");
  await flush();
  FakeWebSocket.last.welcome();
  FakeWebSocket.last.drop(1012, "restarting");
  t.mock.timers.tick(50);
  await flush();
  FakeWebSocket.last.drop(1008, "not authenticated");
  t.mock.timers.tick(100000);
  assert.deepEqual(states, [
    ["open", undefined, undefined],
    ["connecting", 1012, 0], // going away: at once (random() = 0)
    ["closed", 1008, undefined],
  ]);
  assert.equal(client.state, "closed");
  assert.equal(FakeWebSocket.all.length, 2, "no retry after 1008");
});

test("close() closes the socket, stops retrying and is final", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  const client = start(t);
  const states = [];
  client.onStateChange((s, d) => states.push([s, d?.code]));
  await flush();
  const ws = FakeWebSocket.last;
  ws.welcome();
  client.close();
  assert.deepEqual(ws.closedWith, [1000, "client closed"]);
  assert.deepEqual(states, [["open", undefined], ["closed", 1000]]);
  t.mock.timers.tick(100000);
  await flush();
  assert.equal(FakeWebSocket.all.length, 1);
});

test("adding the first \"*\" callback reconnects at once, resuming", async (t) => {
  const client = start(t);
  client.subscribe("forums", () => {});
  await flush();
  const first = FakeWebSocket.last;
  first.welcome("c3");
  const off = client.subscribe(ALL, () => {});
  await flush();
  assert.deepEqual(first.closedWith, [1000, "changing subscription"]);
  assert.equal(FakeWebSocket.last.collections, null);
  assert.equal(FakeWebSocket.last.lastId, "c3");
  FakeWebSocket.last.welcome();
  off();
  await flush();
  assert.deepEqual(FakeWebSocket.last.collections, ["forums"]);
});

test("auth: a token goes in the subprotocol offer, fetched again for each attempt", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  let n = 0;
  start(t, { minDelay: 10, auth: async () => ({ token: `tok-${++n}` }) });
  await flush();
  assert.deepEqual(FakeWebSocket.last.protocols, ["sqla-notify", "sqla-notify.bearer." + btoa("tok-1").replace(/=+$/, "")]);
  FakeWebSocket.last.drop(4401);
  t.mock.timers.tick(20);
  await flush();
  assert.equal(FakeWebSocket.last.protocols[1], "sqla-notify.bearer." + btoa("tok-2").replace(/=+$/, ""));
  assert.ok(!FakeWebSocket.last.url.href.includes("tok"));
});

test("server errors reach onError", async (t) => {
  const client = start(t);
  const errors = [];
  client.onError((m) => errors.push(m.message));
  await flush();
  FakeWebSocket.last.welcome();
  FakeWebSocket.last.receive({ type: "error", message: "unknown collection: 'nope'" });
  assert.deepEqual(errors, ["unknown collection: 'nope'"]);
});

test("bad arguments fail at once, saying what arrived", (t) => {
  const client = start(t);
  assert.throws(() => client.subscribe("", () => {}), /collection name or "\*", got ""/);
  assert.throws(() => client.subscribe("posts", { where: { forum_id: [] } }, () => {}), /where.forum_id must be .* got \[\]/);
  assert.throws(() => client.subscribe("posts", { where: {} }, () => {}), /at least one column/);
  assert.throws(() => client.subscribe("posts", { where: { a: { b: 1 } } }, () => {}), /got \{"b":1\}/);
  assert.throws(() => client.subscribe("posts", { since: 7 }, () => {}), /since must be a cursor string, got 7/);
  assert.throws(() => client.subscribe(ALL, { where: { a: 1 } }, () => {}), /"\*" takes neither/);
  assert.throws(() => client.subscribe("posts", {}), /needs a callback function/);
  assert.throws(() => connect("ftp://x/ws", { WebSocket: FakeWebSocket }), /not a WebSocket URL/);
  assert.throws(() => connect("ws://x/ws", { transport: "sse", EventSource: null }), /needs an EventSource/);
});

test("Node 22+: the global WebSocket is used when none is passed", async (t) => {
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = FakeWebSocket;
  t.after(() => (globalThis.WebSocket = saved));
  const client = connect("ws://example.test/notify/ws");
  t.after(() => client.close());
  await flush();
  assert.equal(FakeWebSocket.all.length, 1);
});

test("Node 20: without a global WebSocket or EventSource, connect() asks for one", (t) => {
  const saved = [globalThis.WebSocket, globalThis.EventSource];
  globalThis.WebSocket = undefined;
  globalThis.EventSource = undefined;
  t.after(() => ([globalThis.WebSocket, globalThis.EventSource] = saved));
  assert.throws(() => connect("ws://example.test/notify/ws"), /pass options.WebSocket or options.EventSource/);
});
