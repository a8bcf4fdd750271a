// Row-level subscriptions (docs/protocol.md, "Subscriptions" to "Snapshot, then changes"):
// filters and their dedupe, enter and leave per callback, since and replayed frames, and
// echo suppression's connection id.
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

const forum7 = { collection: "posts", where: { forum_id: [7] } };
const forum8 = { collection: "posts", where: { forum_id: [8] } };

test("a filtered subscription goes into the handshake as JSON, normalised", async (t) => {
  const client = start(t);
  client.subscribe("forums", () => {});
  client.subscribe("posts", { where: { status: "open", forum_id: [8, 7, 8] } }, () => {});
  await flush();
  const expected = ["forums", { collection: "posts", where: { forum_id: [7, 8], status: ["open"] } }];
  assert.deepEqual(FakeWebSocket.last.collections, expected);
  assert.ok(FakeWebSocket.last.url.search.startsWith("?collections=%5B"), "URL-encoded JSON");
  assert.deepEqual(client.collections, expected);
});

test("one server subscription per distinct (collection, where); the last callback off unsubscribes it", async (t) => {
  const client = start(t);
  await flush();
  const ws = FakeWebSocket.last;
  ws.welcome();
  const off1 = client.subscribe("posts", { where: { forum_id: 7 } }, () => {});
  const off2 = client.subscribe("posts", { where: { forum_id: [7] } }, () => {}); // the same filter
  const off3 = client.subscribe("posts", { where: { forum_id: 8 } }, () => {});
  await flush();
  assert.deepEqual(ws.sent, [{ type: "subscribe", collections: [forum7, forum8] }]);
  off1();
  await flush();
  assert.equal(ws.sent.length, 1);
  off2();
  await flush();
  assert.deepEqual(ws.sent.at(-1), { type: "unsubscribe", collections: [forum7] });
  off3();
  await flush();
  assert.deepEqual(ws.sent.at(-1), { type: "unsubscribe", collections: [forum8] });
});

test("unsubscribing a collection's name subscribes its filters again, catching up from lastId", async (t) => {
  const client = start(t);
  const offAll = client.subscribe("posts", () => {});
  client.subscribe("posts", { where: { forum_id: 7 } }, () => {});
  await flush();
  const ws = FakeWebSocket.last;
  ws.welcome("c0");
  ws.receive({ id: "c4", collection: "posts", action: "insert", data: { id: 1 } });
  offAll();
  await flush();
  // The server drops a collection's filters with its name: they must be sent again.
  assert.deepEqual(ws.sent, [
    { type: "unsubscribe", collections: ["posts"] },
    { type: "subscribe", collections: [forum7], since: "c4" },
  ]);
});

test("a single filtered subscription on a collection takes the frame's move as it is", async (t) => {
  const client = start(t);
  const got = [];
  client.subscribe("posts", { where: { forum_id: 7 } }, (n) => got.push([n.id, n.move]));
  await flush();
  const ws = FakeWebSocket.last;
  ws.welcome();
  ws.receive({ id: "c1", collection: "posts", action: "update", data: { id: 1 }, move: "leave" });
  ws.receive({ id: "c2", collection: "posts", action: "update", data: { id: 2 }, move: "enter" });
  ws.receive({ id: "c3", collection: "posts", action: "update", data: { id: 3 } });
  assert.deepEqual(got, [["c1", "leave"], ["c2", "enter"], ["c3", undefined]]);
});

test("several filters on a collection: each callback gets enter, leave or nothing from data and old", async (t) => {
  const client = start(t);
  const seen = { 7: [], 8: [], both: [], all: [] };
  client.subscribe("posts", { where: { forum_id: 7 } }, (n) => seen[7].push([n.id, n.move]));
  client.subscribe("posts", { where: { forum_id: 8 } }, (n) => seen[8].push([n.id, n.move]));
  client.subscribe("posts", { where: { forum_id: [7, 8] } }, (n) => seen.both.push([n.id, n.move]));
  await flush();
  const ws = FakeWebSocket.last;
  ws.welcome();
  // A post moved from forum 7 to forum 8: the server's move is against the union (none).
  ws.receive({ id: "m1", collection: "posts", action: "update", data: { id: 1, forum_id: 8 }, old: { forum_id: 7 } });
  // A title change in forum 8: forum_id is unchanged, so not in old.
  ws.receive({ id: "m2", collection: "posts", action: "update", data: { id: 1, forum_id: 8 }, old: { title: "x" } });
  ws.receive({ id: "m3", collection: "posts", action: "insert", data: { id: 2, forum_id: 7 } });
  ws.receive({ id: "m4", collection: "posts", action: "delete", data: { id: 2, forum_id: 7 } });
  // The payload lacks forum_id: cannot tell, so every callback gets it, with the frame's move.
  ws.receive({ id: "m5", collection: "posts", action: "update", data: { id: 3 }, move: "leave" });
  // An update without old: the values before are unknown.
  ws.receive({ id: "m6", collection: "posts", action: "update", data: { id: 4, forum_id: 7 } });
  assert.deepEqual(seen[7], [["m1", "leave"], ["m3", undefined], ["m4", undefined], ["m5", "leave"], ["m6", undefined]]);
  assert.deepEqual(seen[8], [["m1", "enter"], ["m2", undefined], ["m5", "leave"], ["m6", undefined]]);
  assert.deepEqual(seen.both, [["m1", undefined], ["m2", undefined], ["m3", undefined], ["m4", undefined], ["m5", "leave"], ["m6", undefined]]);
});

test("a filter next to the whole collection judges each frame itself", async (t) => {
  const client = start(t);
  const filtered = [];
  const whole = [];
  client.subscribe("posts", { where: { forum_id: 7 } }, (n) => filtered.push([n.id, n.move]));
  client.subscribe("posts", (n) => whole.push(n.id));
  await flush();
  const ws = FakeWebSocket.last;
  ws.welcome();
  ws.receive({ id: "a", collection: "posts", action: "insert", data: { id: 1, forum_id: 9 } });
  ws.receive({ id: "b", collection: "posts", action: "update", data: { id: 1, forum_id: 9 }, old: { forum_id: 7 } });
  assert.deepEqual(whole, ["a", "b"]);
  assert.deepEqual(filtered, [["b", "leave"]]);
});

test("filters compare JSON values: 1 is neither true nor \"1\"", async (t) => {
  const client = start(t);
  const got = [];
  client.subscribe("posts", { where: { flag: 1 } }, (n) => got.push(n.id));
  client.subscribe("posts", { where: { flag: true } }, () => {});
  await flush();
  const ws = FakeWebSocket.last;
  ws.welcome();
  for (const [id, flag] of [["t", true], ["s", "1"], ["n", 1]]) {
    ws.receive({ id, collection: "posts", action: "insert", data: { id: 1, flag } });
  }
  assert.deepEqual(got, ["n"]);
});

test("since: sent after the handshake; replayed frames reach only that subscription and keep lastId", async (t) => {
  const client = start(t);
  const live = [];
  const caught = [];
  client.subscribe("posts", { where: { forum_id: 8 } }, (n) => live.push(n.id));
  client.subscribe("posts", { where: { forum_id: 7 }, since: "snap-1" }, (n) => caught.push([n.id, n.replay ?? false]));
  await flush();
  const ws = FakeWebSocket.last;
  assert.deepEqual(ws.collections, [forum8], "the one catching up is not in the handshake");
  ws.welcome("c10");
  assert.deepEqual(ws.sent, [{ type: "subscribe", collections: [forum7], since: "snap-1" }]);
  ws.receive({ id: "c10", collection: "posts", action: "insert", data: { id: 1, forum_id: 8 } });
  ws.receive({ id: "c2", collection: "posts", action: "insert", data: { id: 5, forum_id: 7 }, replay: true });
  assert.equal(client.lastId, "c10", "a replayed frame does not move lastId");
  ws.receive({ type: "subscribed", collections: [forum8, forum7] });
  ws.receive({ id: "c11", collection: "posts", action: "insert", data: { id: 6, forum_id: 7 } });
  ws.receive({ id: "c3", collection: "posts", action: "insert", data: { id: 7, forum_id: 7 }, replay: true }); // late: ignored
  assert.deepEqual(caught, [["c2", true], ["c11", false]]);
  assert.deepEqual(live, ["c10"]);
  assert.equal(client.lastId, "c11");
});

test("since while open sends subscribe with since; a drop before subscribed sends it again", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  const client = start(t, { minDelay: 10 });
  await flush();
  FakeWebSocket.last.welcome("c0");
  client.subscribe("posts", { where: { forum_id: 7 }, since: "snap-2" }, () => {});
  client.subscribe("forums", { since: "snap-2" }, () => {});
  await flush();
  assert.deepEqual(FakeWebSocket.last.sent, [{ type: "subscribe", collections: [forum7, "forums"], since: "snap-2" }]);
  FakeWebSocket.last.drop();
  t.mock.timers.tick(20);
  await flush();
  const ws = FakeWebSocket.last;
  assert.deepEqual(ws.collections, []);
  ws.welcome();
  assert.deepEqual(ws.sent, [{ type: "subscribe", collections: [forum7, "forums"], since: "snap-2" }]);
  ws.receive({ type: "subscribed", collections: [forum7, "forums"] });
  ws.drop();
  t.mock.timers.tick(1000);
  await flush();
  assert.deepEqual(FakeWebSocket.last.collections, [forum7, "forums"], "caught up: resumed from lastId now");
});

test("a resync ends every catch-up: the app reloads everything", async (t) => {
  const client = start(t);
  const caught = [];
  client.subscribe("posts", { where: { forum_id: 7 }, since: "old" }, (n) => caught.push(n.id));
  await flush();
  const ws = FakeWebSocket.last;
  ws.welcome("c0");
  ws.receive({ type: "resync", cursor: "c9", reason: "cannot replay: since left the window" });
  ws.receive({ id: "r1", collection: "posts", action: "insert", data: { forum_id: 7 }, replay: true });
  assert.deepEqual(caught, []);
  assert.equal(client.lastId, "c9");
});

test("echo suppression: the connection id from welcome, in headers() and fetch()", async (t) => {
  const calls = [];
  const fetch = async (input, init) => {
    calls.push([input, Object.fromEntries(init.headers), init.method]);
    return { ok: true };
  };
  const client = start(t, { fetch });
  assert.deepEqual(client.headers(), {});
  assert.equal(client.connection, null);
  await flush();
  FakeWebSocket.last.welcome("c0", "k3y");
  assert.equal(client.connection, "k3y");
  assert.deepEqual(client.headers(), { "X-Notify-Connection": "k3y" });
  await client.fetch("/api/posts", { method: "POST", headers: { "Content-Type": "application/json" } });
  await client.fetch(new Request("http://example.test/api/posts", { headers: { "X-Own": "1" } }));
  assert.deepEqual(calls[0], ["/api/posts", { "content-type": "application/json", "x-notify-connection": "k3y" }, "POST"]);
  assert.deepEqual(calls[1][1], { "x-own": "1", "x-notify-connection": "k3y" });
  FakeWebSocket.last.drop();
  assert.equal(client.connection, null, "a new connection gets a new id");
  assert.deepEqual(client.headers(), {});
});

test("\"*\" with filters: the filtered callbacks judge each frame themselves", async (t) => {
  const client = start(t);
  const got = [];
  client.subscribe(ALL, () => {});
  client.subscribe("posts", { where: { forum_id: 7 } }, (n) => got.push(n.id));
  await flush();
  assert.equal(FakeWebSocket.last.collections, null);
  FakeWebSocket.last.welcome();
  FakeWebSocket.last.receive({ id: "x", collection: "posts", action: "insert", data: { forum_id: 8 } });
  FakeWebSocket.last.receive({ id: "y", collection: "posts", action: "insert", data: { forum_id: 7 } });
  assert.deepEqual(got, ["y"]);
});

test("since on a subscription already live on this client is not sent: it has been receiving all along", async (t) => {
  const client = start(t);
  client.subscribe("posts", { where: { forum_id: 7 } }, () => {});
  await flush();
  const ws = FakeWebSocket.last;
  ws.welcome("c0");
  client.subscribe("posts", { where: { forum_id: 7 }, since: "snap-9" }, () => {});
  await flush();
  assert.deepEqual(ws.sent, []);
});
