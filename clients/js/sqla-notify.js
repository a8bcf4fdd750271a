// sqla-notify.js: the browser client for sqla_notify's notifications.
//
// Dependency-free ES module, one file: the npm package `sqla-notify` (clients/js/ in the
// repository) and the router's `/sqla-notify.js` are this same file. The public API is
// documented in sqla-notify.d.ts next to it; the wire protocol it speaks (messages, cursors,
// close codes) in the project's docs/protocol.md; usage and recipes in docs/client.md.
//
//   import { connect } from "sqla-notify";            // or "/notify/sqla-notify.js"
//   const client = connect("/notify/ws");
//   const off = client.subscribe("posts", { where: { forum_id: 7 } }, (n) => {
//     if (n.move === "leave" || n.action === "delete") removePost(n.data.id);
//     else showPost(n.data.id);
//   });
//   client.onResync(() => reloadEverything());
//   await client.fetch("/api/posts", { method: "POST", body }); // not echoed back to us
//
// With a token: connect("/notify/ws", { auth: async () => ({ token: await getToken() }) })
// calls `auth` before every connection attempt; the token travels in the handshake's
// Sec-WebSocket-Protocol header (never in the URL, so never in access logs). Where WebSocket
// is missing or blocked, the client falls back to Server-Sent Events (`/events`).

/** The collection name that subscribes to every collection the server lets this client see. */
export const ALL = "*";

/** The request header that tells the server which connection a change comes from. */
export const CONNECTION_HEADER = "X-Notify-Connection";

const OPEN = 1; // WebSocket.OPEN, without relying on the constructor's static fields
const POLICY_VIOLATION = 1008; // not authenticated or not authorized: retrying will not help
const TRY_AGAIN_LATER = 1013; // the server dropped us for being too slow
const CREDENTIALS_EXPIRED = 4401; // reconnect with fresh credentials from options.auth
const ABNORMAL = 1006; // no close frame: the connection failed or was lost
const GOING_AWAY = 1001; // the server is shutting down (a rolling restart): move at once
const SERVICE_RESTART = 1012; // the same, said by the server itself (uvicorn) rather than the app
// When a server that was serving us goes away: reconnect within this many ms, uniformly, so
// that its clients do not all land on the other processes in the same instant.
const MOVE_JITTER = 250;
// The subprotocol of this client, and how a token travels in the offer (base64url, no padding).
const PROTOCOL = "sqla-notify";
const BEARER = PROTOCOL + ".bearer.";
// In "auto" mode, WebSocket attempts that fail without ever opening before SSE is tried.
const WS_FAILURES_BEFORE_SSE = 2;

/**
 * Create a client and start connecting. The connection opens in a microtask, so
 * subscriptions made synchronously after `connect()` go into the first handshake.
 */
export function connect(url, options = {}) {
  return new NotifyClient(url, options);
}

class NotifyClient {
  #url; // () => string | URL
  #eventsUrl; // () => string | URL, or null: derived from #url
  #WebSocket;
  #EventSource;
  #fetch;
  #mode; // "auto" | "websocket" | "sse"
  #auth; // null, or () => credentials, called before each connection attempt
  #authorizing = false; // waiting for #auth
  #minDelay;
  #maxDelay;
  #stableAfter;

  // One entry per distinct (collection, where): key -> Entry (see #entry()). Each is one
  // subscription on the server, however many callbacks share it.
  #entries = new Map();
  #resyncListeners = new Set();
  #stateListeners = new Set();
  #errorListeners = new Set();

  #state = "connecting";
  #lastId = null;
  #connection = null; // this connection's id, from welcome
  #socket = null; // a WebSocket or an EventSource
  #transport = null; // "websocket" | "sse", of #socket
  #wsOpened = false; // a WebSocket opened once: "auto" stays with it
  #sseOpened = false; // SSE opened while WebSocket never did: "auto" stays with SSE
  #wsFailures = 0; // WebSocket attempts that failed without opening
  #lastAttempt = null;
  #timer = null; // pending reconnect
  #attempt = 0; // consecutive failed connections, drives the backoff
  #openedAt = null; // when the current connection opened
  #syncQueued = false;
  // What the server was last told: every collection, or exactly #sent (key -> wire entry).
  #sentAll = false;
  #sent = new Map();

  constructor(url, options) {
    this.#url = urlGetter(url, resolveUrl);
    this.#eventsUrl = options.eventsUrl == null ? null : urlGetter(options.eventsUrl, resolveHttpUrl);
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.#EventSource = options.EventSource ?? globalThis.EventSource;
    this.#fetch = options.fetch ?? null;
    this.#mode = options.transport ?? "auto";
    const ws = typeof this.#WebSocket === "function";
    const sse = typeof this.#EventSource === "function";
    if (this.#mode === "websocket" ? !ws : this.#mode === "sse" ? !sse : this.#mode === "auto" ? !ws && !sse : true) {
      throw new TypeError(
        `sqla-notify: options.transport ${JSON.stringify(this.#mode)} needs ` +
          ({ websocket: "a WebSocket", sse: "an EventSource", auto: "a WebSocket or an EventSource" }[this.#mode] ??
            'to be "auto", "websocket" or "sse"') +
          " implementation (pass options.WebSocket or options.EventSource outside a browser)",
      );
    }
    this.#auth = options.auth ?? null;
    if (this.#auth !== null && typeof this.#auth !== "function") {
      throw new TypeError("sqla-notify: options.auth must be a function returning { token } (or a promise of it)");
    }
    this.#minDelay = Math.max(0, options.minDelay ?? 500);
    this.#maxDelay = Math.max(this.#minDelay, options.maxDelay ?? 30000);
    this.#stableAfter = Math.max(0, options.stableAfter ?? 10000);
    this.#lastId = options.lastId ?? null;
    globalThis.addEventListener?.("online", this.#onOnline);
    queueMicrotask(() => this.#open());
  }

  // Back online: retry now rather than at the end of a backoff that grew while offline.
  #onOnline = () => {
    if (this.#timer === null) return;
    clearTimeout(this.#timer);
    this.#open();
  };

  get state() {
    return this.#state;
  }

  get lastId() {
    return this.#lastId;
  }

  get connection() {
    return this.#connection;
  }

  get transport() {
    return this.#transport;
  }

  get collections() {
    return this.#entries.has(ALL) ? null : [...this.#wanted().values()];
  }

  subscribe(collection, options, callback) {
    if (typeof options === "function" && callback === undefined) [options, callback] = [{}, options];
    if (typeof collection !== "string" || collection === "") {
      throw new TypeError(`sqla-notify: subscribe() needs a collection name or "*", got ${describe(collection)}`);
    }
    if (options === null || typeof options !== "object") {
      throw new TypeError(`sqla-notify: subscribe() options must be { where?, since? }, got ${describe(options)}`);
    }
    if (typeof callback !== "function") {
      throw new TypeError(`sqla-notify: subscribe() needs a callback function, got ${describe(callback)}`);
    }
    const where = options.where == null ? null : normaliseWhere(options.where);
    const since = options.since ?? null;
    if (since !== null && typeof since !== "string") {
      throw new TypeError(`sqla-notify: subscribe() since must be a cursor string, got ${describe(since)}`);
    }
    if (collection === ALL && (where !== null || since !== null)) {
      throw new TypeError('sqla-notify: "*" takes neither where nor since; name a collection');
    }
    const key = entryKey(collection, where);
    let entry = this.#entries.get(key);
    if (!entry) {
      entry = { collection, where, callbacks: new Set(), since, sinceSent: false };
      this.#entries.set(key, entry);
    }
    // A fresh wrapper per call, so subscribing the same function twice gives two
    // independent subscriptions and each off() removes exactly one.
    const wrapper = (n) => callback(n);
    entry.callbacks.add(wrapper);
    this.#queueSync();
    return once(() => {
      entry.callbacks.delete(wrapper);
      if (entry.callbacks.size === 0 && this.#entries.get(key) === entry) this.#entries.delete(key);
      this.#queueSync();
    });
  }

  headers() {
    return this.#connection === null ? {} : { [CONNECTION_HEADER]: this.#connection };
  }

  fetch(input, init = {}) {
    const fetch = this.#fetch ?? globalThis.fetch;
    // A Request's own headers are replaced by init.headers: start from them.
    const headers = new Headers(init.headers ?? (typeof Request === "function" && input instanceof Request ? input.headers : undefined));
    if (this.#connection !== null) headers.set(CONNECTION_HEADER, this.#connection);
    return fetch(input, { ...init, headers });
  }

  onResync(listener) {
    return addListener(this.#resyncListeners, listener);
  }

  onStateChange(listener) {
    return addListener(this.#stateListeners, listener);
  }

  onError(listener) {
    return addListener(this.#errorListeners, listener);
  }

  close() {
    if (this.#state === "closed") return;
    globalThis.removeEventListener?.("online", this.#onOnline);
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#dropSocket(1000, "client closed");
    this.#setState("closed", { code: 1000, reason: "client closed" });
  }

  // --- connection -------------------------------------------------------------

  #open() {
    this.#timer = null;
    if (this.#state === "closed" || this.#socket || this.#authorizing) return;
    this.#setState("connecting");
    if (this.#auth === null) {
      this.#dial(null);
      return;
    }
    // Fresh credentials for every attempt: a tab left open re-authenticates.
    this.#authorizing = true;
    new Promise((resolve) => resolve(this.#auth())).then(
      (credentials) => {
        this.#authorizing = false;
        if (this.#state === "closed") return;
        let protocols;
        try {
          protocols = offer(credentials);
        } catch (err) {
          report(err);
          this.#retry({ code: ABNORMAL, reason: String(err?.message ?? err) });
          return;
        }
        this.#dial(protocols);
      },
      (err) => {
        this.#authorizing = false;
        if (this.#state === "closed") return;
        report(err);
        this.#retry({ code: ABNORMAL, reason: `options.auth failed: ${err?.message ?? err}` });
      },
    );
  }

  // Which transport this attempt uses. "auto" starts with WebSocket and keeps it once one
  // opened; after WS_FAILURES_BEFORE_SSE attempts that never opened (a proxy that blocks
  // the upgrade), it alternates with SSE, and keeps SSE once that opened.
  #pickTransport() {
    if (this.#mode !== "auto") return this.#mode;
    if (typeof this.#WebSocket !== "function") return "sse";
    if (typeof this.#EventSource !== "function" || this.#wsOpened) return "websocket";
    if (this.#sseOpened) return "sse";
    return this.#wsFailures >= WS_FAILURES_BEFORE_SSE && this.#lastAttempt === "websocket" ? "sse" : "websocket";
  }

  #dial(protocols) {
    const transport = this.#pickTransport();
    this.#lastAttempt = transport;
    // Read the subscriptions now, not before #auth: they may have changed meanwhile.
    // Entries waiting to catch up from `since` are subscribed once open (WebSocket).
    this.#sentAll = this.#entries.has(ALL);
    this.#sent = new Map();
    for (const entry of this.#entries.values()) entry.sinceSent = false;
    if (!this.#sentAll) {
      for (const [key, wire] of this.#wanted()) {
        if (transport === "sse" || this.#entries.get(key).since === null) this.#sent.set(key, wire);
      }
    }
    let socket;
    try {
      socket = transport === "sse" ? this.#dialSse() : this.#dialWebSocket(protocols);
    } catch (err) {
      report(err);
      this.#retry({ code: ABNORMAL, reason: String(err?.message ?? err) });
      return;
    }
    this.#socket = socket;
    this.#transport = transport;
  }

  #dialWebSocket(protocols) {
    const url = buildUrl(resolveUrl(this.#url()), this.#sentAll ? null : [...this.#sent.values()], this.#lastId);
    const ws = protocols ? new this.#WebSocket(url, protocols) : new this.#WebSocket(url);
    ws.onopen = () => {
      this.#wsOpened = true;
      this.#opened();
      this.#sync(); // subscriptions may have changed during the handshake
    };
    ws.onmessage = (event) => this.#onMessage(event.data);
    ws.onclose = (event) => this.#onClose(event);
    return ws;
  }

  // SSE: subscriptions are fixed at connect. `since` cannot be sent on a stream: a client
  // with no position yet starts from the first pending one; otherwise it resumes from lastId.
  #dialSse() {
    let lastId = this.#lastId;
    for (const entry of this.#entries.values()) {
      if (entry.since === null) continue;
      lastId ??= entry.since;
      entry.since = null;
    }
    const url = buildUrl(this.#sseUrl(), this.#sentAll ? null : [...this.#sent.values()], lastId);
    const es = new this.#EventSource(url);
    es.onopen = () => {
      if (!this.#wsOpened) this.#sseOpened = true;
      this.#opened();
    };
    es.onmessage = (event) => {
      // The server ends the stream after "expired" (reconnect through options.auth, soon)
      // and after "goaway" (it is shutting down: move at once), as a WebSocket's close code.
      const type = this.#onMessage(event.data);
      if (type === "expired") this.#sseLost(es, CREDENTIALS_EXPIRED, "credentials expired");
      else if (type === "goaway") this.#sseLost(es, GOING_AWAY, "server going away");
    };
    // EventSource reports neither status nor reason, and would reconnect on its own with
    // its own timing: take over, with our backoff and last_id.
    es.onerror = () => this.#sseLost(es, ABNORMAL, "event stream failed");
    return es;
  }

  #sseLost(es, code, reason) {
    es.onopen = es.onmessage = es.onerror = null;
    es.close();
    this.#onClose({ code, reason });
  }

  #sseUrl() {
    if (this.#eventsUrl) return resolveHttpUrl(this.#eventsUrl());
    const url = resolveUrl(this.#url());
    if (!url.pathname.endsWith("/ws")) {
      throw new TypeError(`sqla-notify: cannot derive the SSE URL from ${url.href} (no /ws at the end): pass options.eventsUrl`);
    }
    url.pathname = url.pathname.slice(0, -"ws".length) + "events";
    url.protocol = url.protocol === "wss:" ? "https:" : "http:";
    return url;
  }

  #opened() {
    this.#openedAt = Date.now();
    this.#setState("open");
  }

  #onClose(event) {
    const transport = this.#transport;
    const served = this.#connection !== null; // welcomed on this connection
    this.#socket = null;
    this.#connection = null;
    const detail = { code: event.code, reason: event.reason ?? "" };
    if (transport === "websocket" && this.#openedAt === null) this.#wsFailures += 1;
    if (event.code === POLICY_VIOLATION) {
      globalThis.removeEventListener?.("online", this.#onOnline);
      this.#setState("closed", detail);
      return;
    }
    // Only a connection that stayed up resets the backoff: a server that accepts and
    // then drops every connection at once must not be hammered at minDelay. A server
    // that says "too slow" (1013) gets no reset either. Expired credentials (4401) are
    // retried like a drop, through options.auth again: after a connection that lasted,
    // within minDelay (jittered: credentials issued together expire together); when
    // refused as already expired, with the usual backoff.
    const stable = this.#openedAt !== null && Date.now() - this.#openedAt >= this.#stableAfter;
    this.#openedAt = null;
    // A server that served us and now goes away (a restart, a deploy: 1001 or 1012) is not
    // a failure: reconnect at once, with our last id, to whichever process answers, within
    // MOVE_JITTER. Not when it goes away before its welcome (it is refusing connections
    // while it drains): that is retried with the usual backoff.
    if (served && (event.code === GOING_AWAY || event.code === SERVICE_RESTART)) {
      this.#attempt = 0;
      this.#retry(detail, MOVE_JITTER);
      return;
    }
    if (stable && event.code !== TRY_AGAIN_LATER) this.#attempt = 0;
    this.#retry(detail, stable && event.code === CREDENTIALS_EXPIRED ? this.#minDelay : null);
  }

  // `within`: retry after a uniform delay in [0, within] ms instead of the backoff.
  #retry(detail, within = null) {
    // Exponential backoff with full jitter: uniform in [minDelay, cap], cap doubling per
    // failure up to maxDelay, so that clients dropped together do not return together.
    const cap = Math.min(this.#maxDelay, this.#minDelay * 2 ** (this.#attempt + 1));
    const delay = Math.round(
      within !== null ? Math.random() * within : this.#minDelay + Math.random() * (cap - this.#minDelay),
    );
    this.#attempt += 1;
    this.#timer = setTimeout(() => this.#open(), delay);
    this.#setState("connecting", { ...detail, retryIn: delay }, true);
  }

  // Forget the current socket without retrying: its close event must not reach #onClose.
  #dropSocket(code, reason) {
    const socket = this.#socket;
    if (!socket) return;
    this.#socket = null;
    this.#connection = null;
    this.#openedAt = null;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    try {
      if (this.#transport === "sse") socket.close();
      else socket.close(code, reason);
    } catch (err) {
      report(err);
    }
  }

  #reconnectNow(reason) {
    this.#dropSocket(1000, reason);
    this.#open();
  }

  // --- subscriptions ----------------------------------------------------------

  // key -> wire entry, for every entry but ALL.
  #wanted() {
    const wanted = new Map();
    for (const [key, entry] of this.#entries) {
      if (key !== ALL) wanted.set(key, entry.where === null ? entry.collection : { collection: entry.collection, where: entry.where });
    }
    return wanted;
  }

  // Batch the subscribe()/off() calls of one task into at most one message of each kind.
  #queueSync() {
    if (this.#syncQueued) return;
    this.#syncQueued = true;
    queueMicrotask(() => {
      this.#syncQueued = false;
      this.#sync();
    });
  }

  // Bring the server's subscriptions in line with the local entries. With no socket
  // (before the first connect, or waiting to retry) there is nothing to do: the next
  // handshake carries the current set.
  #sync() {
    if (this.#state === "closed" || !this.#socket) return;
    if (this.#entries.has(ALL) !== this.#sentAll) {
      // The protocol has no message for "all collections", only the absent query
      // parameter: reconnect at once, resuming from lastId so nothing is lost.
      this.#reconnectNow("changing subscription");
      return;
    }
    const wanted = this.#wanted();
    if (this.#transport === "sse") {
      // A stream's subscriptions are fixed: a change reconnects, resuming from lastId.
      const pending = [...this.#entries.values()].some((e) => e.since !== null);
      if (!this.#sentAll && (pending || !sameKeys(wanted, this.#sent))) this.#reconnectNow("changing subscription");
      return;
    }
    if (this.#socket.readyState !== OPEN) return; // onopen syncs again
    if (this.#sentAll) {
      for (const entry of this.#entries.values()) entry.since = null; // everything comes anyway
      return;
    }
    const added = [...wanted.keys()].filter((k) => !this.#sent.has(k));
    const removed = [...this.#sent.keys()].filter((k) => !wanted.has(k));
    // Unsubscribing a name removes that collection's filters on the server too: subscribe
    // the filters still wanted again, catching up from lastId over the gap.
    const droppedNames = new Set(removed.filter((k) => typeof this.#sent.get(k) === "string").map((k) => this.#sent.get(k)));
    const refilter = [...wanted.keys()].filter((k) => this.#sent.has(k) && droppedNames.has(this.#entries.get(k).collection));
    for (const key of refilter) this.#entries.get(key).since ??= this.#lastId;
    const plain = []; // new entries, subscribed as they are
    const again = []; // filters of a dropped name, with no position to catch up from yet
    const bySince = new Map(); // since -> entries that catch up from it
    const catchUp = (key, entry) => {
      entry.sinceSent = true;
      bySince.set(entry.since, [...(bySince.get(entry.since) ?? []), wanted.get(key)]);
    };
    for (const key of added) {
      const entry = this.#entries.get(key);
      if (entry.since === null) plain.push(wanted.get(key));
      else catchUp(key, entry);
    }
    for (const key of refilter) {
      const entry = this.#entries.get(key);
      if (entry.since === null) again.push(wanted.get(key));
      else catchUp(key, entry);
    }
    // Subscribe before unsubscribing (no gap for a swapped entry), except the filters that
    // an unsubscribed name takes with it: those come after.
    if (plain.length) this.#send({ type: "subscribe", collections: plain });
    if (removed.length) this.#send({ type: "unsubscribe", collections: removed.map((k) => this.#sent.get(k)) });
    if (again.length) this.#send({ type: "subscribe", collections: again });
    for (const [since, collections] of bySince) this.#send({ type: "subscribe", collections, since });
    this.#sent = wanted;
  }

  #send(message) {
    try {
      this.#socket.send(JSON.stringify(message));
    } catch (err) {
      report(err); // the close event that follows reconnects with the right set
    }
  }

  // --- incoming ---------------------------------------------------------------

  // Returns the type of a control message, for the SSE transport's "expired".
  #onMessage(data) {
    if (typeof data !== "string") return undefined; // the protocol uses text frames only
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn("sqla-notify: ignoring a frame that is not JSON:", data);
      return undefined;
    }
    if (msg === null || typeof msg !== "object" || Array.isArray(msg)) return undefined;

    if (msg.type === undefined) {
      if (typeof msg.collection === "string" && msg.id != null) this.#deliver(msg);
      return undefined;
    }

    switch (msg.type) {
      case "welcome":
        // On a fresh start the server's position is where we begin. When resuming,
        // keep our own id: the server is about to replay from it.
        if (this.#lastId == null && msg.cursor != null) this.#lastId = msg.cursor;
        this.#connection = typeof msg.connection === "string" ? msg.connection : null;
        break;
      case "subscribed":
        // Our own set is authoritative; this only tells which `since` catch-ups are over
        // (the server sends their replayed frames before it).
        this.#replayDone(msg.collections);
        break;
      case "resync":
        if (msg.cursor != null) this.#lastId = msg.cursor;
        for (const entry of this.#entries.values()) [entry.since, entry.sinceSent] = [null, false]; // the app reloads all
        if (this.#resyncListeners.size) {
          emit(this.#resyncListeners, msg);
        } else {
          console.warn(
            "sqla-notify: the server could not replay missed notifications " +
              `(${msg.reason ?? "no reason given"}); data shown may be stale. ` +
              "Register client.onResync() to reload it.",
          );
        }
        break;
      case "error":
        if (this.#errorListeners.size) emit(this.#errorListeners, msg);
        else console.warn("sqla-notify: server error:", msg.message);
        break;
      default:
        // Unknown types are ignored so that newer servers can add messages.
        break;
    }
    return msg.type;
  }

  #replayDone(collections) {
    const listed = collections == null ? null : new Set(collections.map(wireKey));
    for (const [key, entry] of this.#entries) {
      if (entry.sinceSent && (listed === null || listed.has(key))) {
        entry.since = null;
        entry.sinceSent = false;
      }
    }
  }

  // Hand a notification to the callbacks it concerns. A replayed frame (`replay: true`,
  // catching up a `since`) is older than what was received: it goes only to the entries
  // catching up, and does not move lastId.
  #deliver(msg) {
    const replay = msg.replay === true;
    if (!replay) this.#lastId = msg.id; // first: a callback that reads client.lastId sees this one
    const targets = [];
    for (const entry of this.#entries.values()) {
      if (replay ? entry.since !== null && entry.sinceSent && entry.collection === msg.collection : entry.collection === msg.collection || entry.collection === ALL) {
        targets.push(entry);
      }
    }
    // The server marks `move` against all of this connection's filters on the collection:
    // that is an entry's own when it is the only entry on the collection (and no "*").
    let onCollection = 0;
    for (const entry of this.#entries.values()) {
      if (entry.collection === msg.collection || entry.collection === ALL) onCollection += 1;
    }
    const alone = onCollection === 1;
    for (const entry of targets) {
      const n = entry.where === null || alone ? msg : forEntry(msg, entry.where);
      if (n !== null) emit(entry.callbacks, n);
    }
  }

  #setState(state, detail, force = false) {
    if (state === this.#state && !force) return;
    this.#state = state;
    emit(this.#stateListeners, state, detail);
  }
}

// --- filters ------------------------------------------------------------------

function isScalar(value) {
  return value === null || ["string", "number", "boolean"].includes(typeof value);
}

// The protocol's form of a filter, and one spelling per filter (so that equal filters share
// one server subscription): keys sorted, every value a list, without repeats, sorted.
function normaliseWhere(where) {
  if (typeof where !== "object" || Array.isArray(where)) {
    throw new TypeError(`sqla-notify: where must be an object of column: value(s), got ${describe(where)}`);
  }
  const keys = Object.keys(where).sort();
  if (keys.length === 0) throw new TypeError("sqla-notify: where must name at least one column, got {}");
  const out = {};
  for (const key of keys) {
    const raw = where[key];
    const values = Array.isArray(raw) ? raw : [raw];
    if (values.length === 0 || !values.every(isScalar)) {
      throw new TypeError(
        `sqla-notify: where.${key} must be a string, number, boolean, null or a non-empty list of them, got ${describe(raw)}`,
      );
    }
    const unique = new Map(values.map((v) => [JSON.stringify(v), v]));
    out[key] = [...unique.keys()].sort().map((k) => unique.get(k));
  }
  return out;
}

function entryKey(collection, where) {
  return where === null ? (collection === ALL ? ALL : JSON.stringify(collection)) : JSON.stringify([collection, where]);
}

// The key of an entry as the server lists it in `subscribed`.
function wireKey(wire) {
  if (typeof wire === "string") return entryKey(wire, null);
  try {
    return entryKey(wire.collection, normaliseWhere(wire.where));
  } catch {
    return null;
  }
}

// true or false when every column of `where` is in `values`; undefined when one is missing.
function matches(where, values) {
  if (values === null || typeof values !== "object") return undefined;
  for (const [key, allowed] of Object.entries(where)) {
    if (!Object.hasOwn(values, key)) return undefined;
    const value = values[key];
    if (!isScalar(value) || !allowed.includes(value)) return false;
  }
  return true;
}

// The notification as one filtered entry among several on its collection sees it, or null
// when it is not for that entry. Before and after are judged from `data` and `old` where
// they hold every column of the filter; otherwise the frame goes through as it came.
function forEntry(msg, where) {
  const data = msg.data;
  let before, after;
  if (msg.action === "insert") [before, after] = [false, matches(where, data)];
  else if (msg.action === "delete") [before, after] = [matches(where, data), false];
  else if (msg.action === "update" && msg.old !== null && typeof msg.old === "object") {
    [before, after] = [matches(where, { ...data, ...msg.old }), matches(where, data)];
  }
  if (before === undefined || after === undefined) return msg; // cannot tell: as it came
  if (!before && !after) return null;
  const move = msg.action !== "update" || before === after ? undefined : after ? "enter" : "leave";
  if (move === msg.move) return msg;
  const { move: _, ...rest } = msg;
  return move === undefined ? rest : { ...rest, move };
}

// --- helpers ------------------------------------------------------------------

function urlGetter(url, resolve) {
  if (typeof url === "function") return url;
  resolve(url); // fail fast on a malformed URL rather than retrying it forever
  return () => url;
}

function resolveAgainstPage(raw) {
  const base = globalThis.location?.href;
  return base === undefined ? new URL(raw) : new URL(raw, base);
}

function resolveUrl(raw) {
  const url = resolveAgainstPage(raw);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  else if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new TypeError(`sqla-notify: not a WebSocket URL: ${url.href}`);
  }
  url.hash = "";
  return url;
}

function resolveHttpUrl(raw) {
  const url = resolveAgainstPage(raw);
  if (url.protocol === "ws:") url.protocol = "http:";
  else if (url.protocol === "wss:") url.protocol = "https:";
  else if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError(`sqla-notify: not an http(s) URL for the event stream: ${url.href}`);
  }
  url.hash = "";
  return url;
}

// The subprotocols to offer for what options.auth returned: none for no token (cookies),
// else ours and the token, base64url-encoded (a subprotocol allows only a few characters).
function offer(credentials) {
  if (credentials == null) return null;
  const token = credentials.token;
  if (typeof credentials !== "object" || (token != null && typeof token !== "string")) {
    throw new TypeError("sqla-notify: options.auth must return { token: string }, or nothing for cookies");
  }
  if (!token) return null;
  let binary = "";
  for (const byte of new TextEncoder().encode(token)) binary += String.fromCharCode(byte);
  return [PROTOCOL, BEARER + btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")];
}

// Keeps any query parameters of the URL's own and sets ours: names alone as a plain
// comma-separated list (built by hand so that the commas stay literal), with any filter
// as a JSON array.
function buildUrl(url, collections, lastId) {
  url.searchParams.delete("collections");
  url.searchParams.delete("last_id");
  const parts = [];
  if (url.search) parts.push(url.searchParams.toString());
  if (collections) {
    const names = collections.every((c) => typeof c === "string");
    const value = names ? collections.map(encodeURIComponent).join(",") : encodeURIComponent(JSON.stringify(collections));
    parts.push("collections=" + value);
  }
  if (lastId != null) parts.push("last_id=" + encodeURIComponent(String(lastId)));
  url.search = parts.join("&");
  return url.href;
}

function sameKeys(a, b) {
  return a.size === b.size && [...a.keys()].every((k) => b.has(k));
}

function describe(value) {
  if (typeof value === "function") return "a function";
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

function addListener(set, listener) {
  if (typeof listener !== "function") throw new TypeError("sqla-notify: listener must be a function");
  const entry = (...args) => listener(...args);
  set.add(entry);
  return once(() => set.delete(entry));
}

// Call each listener; one that throws is reported and does not stop the others. A
// listener removed by an earlier one during the same dispatch is skipped, as with DOM events.
function emit(listeners, ...args) {
  if (!listeners) return;
  for (const listener of [...listeners]) {
    if (!listeners.has(listener)) continue;
    try {
      listener(...args);
    } catch (err) {
      report(err);
    }
  }
}

function report(err) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(err);
  else console.error(err);
}

function once(fn) {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    fn();
  };
}
