// Fakes of the browser APIs the client uses, injected through connect()'s options, and a
// helper to let the client's microtasks (batched subscriptions, auth) run.

/** A WebSocket that records what the client does, driven by the test. */
export class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 3;
  /** Every socket created, in order. */
  static all = [];

  constructor(url, protocols) {
    this.url = new URL(url);
    this.protocols = protocols;
    this.readyState = FakeWebSocket.CONNECTING;
    this.sent = []; // parsed messages the client sent
    this.closedWith = null; // [code, reason] when the client closed it
    this.onopen = this.onmessage = this.onclose = null;
    FakeWebSocket.all.push(this);
  }

  static reset() {
    FakeWebSocket.all = [];
  }

  static get last() {
    return FakeWebSocket.all.at(-1);
  }

  send(data) {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error("send() on a socket that is not open");
    this.sent.push(JSON.parse(data));
  }

  close(code, reason) {
    this.closedWith = [code, reason];
    this.readyState = FakeWebSocket.CLOSED;
  }

  // --- the server's side ---
  open() {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.({});
  }

  receive(message) {
    this.onmessage?.({ data: typeof message === "string" ? message : JSON.stringify(message) });
  }

  /** Accept and say welcome, as the server does first. */
  welcome(cursor = "c0", connection = "conn-1") {
    this.open();
    this.receive({ type: "welcome", cursor, connection });
  }

  drop(code = 1006, reason = "") {
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.({ code, reason });
  }

  /** The `collections` query parameter: a list of entries, or null when absent. */
  get collections() {
    const raw = this.url.searchParams.get("collections");
    if (raw === null) return null;
    if (raw.startsWith("[")) return JSON.parse(raw);
    return raw === "" ? [] : raw.split(",");
  }

  get lastId() {
    return this.url.searchParams.get("last_id");
  }
}

/** An EventSource driven by the test, like FakeWebSocket. */
export class FakeEventSource {
  static all = [];

  constructor(url) {
    this.url = new URL(url);
    this.closed = false;
    this.onopen = this.onmessage = this.onerror = null;
    FakeEventSource.all.push(this);
  }

  static reset() {
    FakeEventSource.all = [];
  }

  static get last() {
    return FakeEventSource.all.at(-1);
  }

  close() {
    this.closed = true;
  }

  open() {
    this.onopen?.({});
  }

  receive(message) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }

  fail() {
    this.onerror?.({});
  }

  get collections() {
    return FakeWebSocket.prototype.__lookupGetter__("collections").call(this);
  }

  get lastId() {
    return this.url.searchParams.get("last_id");
  }
}

/** Let pending microtasks and promise callbacks run (setImmediate is not faked). */
export function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}
