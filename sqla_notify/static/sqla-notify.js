// sqla-notify.js: the browser client for sqla_notify's WebSocket notifications.
//
// Dependency-free ES module; load it with <script type="module"> or `import`.
// The public API is documented in sqla-notify.d.ts next to this file; the wire protocol it
// speaks (messages, cursors, close codes) in the project's docs/protocol.md, and recipes for
// Angular and React in docs/client.md.
//
//   import { connect } from "/notify/sqla-notify.js";
//   const client = connect("/notify/ws");
//   const off = client.subscribe("forums", (n) => reload(n.data));
//   client.onResync(() => reloadEverything());
//
// With a token: connect("/notify/ws", { auth: async () => ({ token: await getToken() }) })
// calls `auth` before every connection attempt; the token travels in the handshake's
// Sec-WebSocket-Protocol header (never in the URL, so never in access logs).

/** The collection name that subscribes to every collection the server lets this client see. */
export const ALL = "*";

const OPEN = 1; // WebSocket.OPEN, without relying on the constructor's static fields
const POLICY_VIOLATION = 1008; // not authenticated or not authorized: retrying will not help
const TRY_AGAIN_LATER = 1013; // the server dropped us for being too slow
const CREDENTIALS_EXPIRED = 4401; // reconnect with fresh credentials from options.auth
// The subprotocol of this client, and how a token travels in the offer (base64url, no padding).
const PROTOCOL = "sqla-notify";
const BEARER = PROTOCOL + ".bearer.";

/**
 * Create a client and start connecting. The socket opens in a microtask, so
 * subscriptions made synchronously after `connect()` go into the first handshake.
 */
export function connect(url, options = {}) {
  return new NotifyClient(url, options);
}

class NotifyClient {
  #url; // () => string | URL
  #WebSocket;
  #auth; // null, or () => credentials, called before each connection attempt
  #authorizing = false; // waiting for #auth
  #minDelay;
  #maxDelay;
  #stableAfter;

  #listeners = new Map(); // collection name (or ALL) -> Set of callbacks
  #resyncListeners = new Set();
  #stateListeners = new Set();
  #errorListeners = new Set();

  #state = "connecting";
  #lastId = null;
  #socket = null;
  #timer = null; // pending reconnect
  #attempt = 0; // consecutive failed connections, drives the backoff
  #openedAt = 0;
  #syncQueued = false;
  // What the server was last told: every collection, or exactly #sent.
  #sentAll = false;
  #sent = new Set();

  constructor(url, options) {
    if (typeof url === "function") {
      this.#url = url;
    } else {
      resolveUrl(url); // fail fast on a malformed URL rather than retrying it forever
      this.#url = () => url;
    }
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("sqla-notify: no WebSocket implementation available");
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

  get collections() {
    return this.#listeners.has(ALL) ? null : [...this.#wanted()];
  }

  subscribe(collection, callback) {
    if (typeof collection !== "string" || collection === "") {
      throw new TypeError("sqla-notify: subscribe() needs a collection name or \"*\"");
    }
    if (typeof callback !== "function") {
      throw new TypeError("sqla-notify: subscribe() needs a callback function");
    }
    // A fresh wrapper per call, so subscribing the same function twice gives two
    // independent subscriptions and each off() removes exactly one.
    const entry = (n) => callback(n);
    let set = this.#listeners.get(collection);
    if (!set) this.#listeners.set(collection, (set = new Set()));
    set.add(entry);
    this.#queueSync();
    return once(() => {
      set.delete(entry);
      if (set.size === 0 && this.#listeners.get(collection) === set) {
        this.#listeners.delete(collection);
      }
      this.#queueSync();
    });
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
          this.#retry({ code: 1006, reason: String(err?.message ?? err) });
          return;
        }
        this.#dial(protocols);
      },
      (err) => {
        this.#authorizing = false;
        if (this.#state === "closed") return;
        report(err);
        this.#retry({ code: 1006, reason: `options.auth failed: ${err?.message ?? err}` });
      },
    );
  }

  #dial(protocols) {
    // Read the subscriptions now, not before #auth: they may have changed meanwhile.
    this.#sentAll = this.#listeners.has(ALL);
    this.#sent = this.#sentAll ? new Set() : this.#wanted();
    let ws;
    try {
      const url = buildUrl(this.#url(), this.#sentAll ? null : this.#sent, this.#lastId);
      ws = protocols ? new this.#WebSocket(url, protocols) : new this.#WebSocket(url);
    } catch (err) {
      report(err);
      this.#retry({ code: 1006, reason: String(err?.message ?? err) });
      return;
    }
    this.#socket = ws;
    ws.onopen = () => {
      this.#openedAt = Date.now();
      this.#setState("open");
      this.#sync(); // subscriptions may have changed during the handshake
    };
    ws.onmessage = (event) => this.#onMessage(event.data);
    ws.onclose = (event) => this.#onClose(event);
  }

  #onClose(event) {
    this.#socket = null;
    const detail = { code: event.code, reason: event.reason ?? "" };
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
    const stable = this.#openedAt && Date.now() - this.#openedAt >= this.#stableAfter;
    if (stable && event.code !== TRY_AGAIN_LATER) this.#attempt = 0;
    this.#openedAt = 0;
    this.#retry(detail, stable && event.code === CREDENTIALS_EXPIRED);
  }

  #retry(detail, soon = false) {
    // Exponential backoff with full jitter: uniform in [minDelay, cap], cap doubling per
    // failure up to maxDelay, so that clients dropped together do not return together.
    const cap = Math.min(this.#maxDelay, this.#minDelay * 2 ** (this.#attempt + 1));
    const delay = Math.round(
      soon ? Math.random() * this.#minDelay : this.#minDelay + Math.random() * (cap - this.#minDelay),
    );
    this.#attempt += 1;
    this.#timer = setTimeout(() => this.#open(), delay);
    this.#setState("connecting", { ...detail, retryIn: delay }, true);
  }

  #dropSocket(code, reason) {
    const ws = this.#socket;
    if (!ws) return;
    this.#socket = null;
    this.#openedAt = 0;
    ws.onopen = ws.onmessage = ws.onclose = null; // its close event must not trigger a retry
    try {
      ws.close(code, reason);
    } catch (err) {
      report(err);
    }
  }

  // --- subscriptions ----------------------------------------------------------

  #wanted() {
    const names = new Set(this.#listeners.keys());
    names.delete(ALL);
    return names;
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

  // Bring the server's subscription in line with the local listeners. With no socket
  // (before the first connect, or waiting to retry) there is nothing to do: the next
  // handshake carries the current set.
  #sync() {
    if (this.#state === "closed" || !this.#socket) return;
    if (this.#listeners.has(ALL) !== this.#sentAll) {
      // The protocol has no message for "all collections", only the absent query
      // parameter: reconnect at once, resuming from lastId so nothing is lost.
      this.#dropSocket(1000, "changing subscription");
      this.#open();
      return;
    }
    if (this.#sentAll || this.#socket.readyState !== OPEN) return; // onopen syncs again
    const wanted = this.#wanted();
    const added = [...wanted].filter((c) => !this.#sent.has(c));
    const removed = [...this.#sent].filter((c) => !wanted.has(c));
    if (added.length) this.#send({ type: "subscribe", collections: added });
    if (removed.length) this.#send({ type: "unsubscribe", collections: removed });
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

  #onMessage(data) {
    if (typeof data !== "string") return; // the protocol uses text frames only
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn("sqla-notify: ignoring a frame that is not JSON:", data);
      return;
    }
    if (msg === null || typeof msg !== "object" || Array.isArray(msg)) return;

    if (msg.type === undefined) {
      if (typeof msg.collection !== "string" || msg.id == null) return;
      // Record the cursor first: a callback that reads client.lastId sees this one.
      this.#lastId = msg.id;
      emit(this.#listeners.get(msg.collection), msg);
      emit(this.#listeners.get(ALL), msg);
      return;
    }

    switch (msg.type) {
      case "welcome":
        // On a fresh start the server's position is where we begin. When resuming,
        // keep our own id: the server is about to replay from it.
        if (this.#lastId == null && msg.cursor != null) this.#lastId = msg.cursor;
        break;
      case "resync":
        if (msg.cursor != null) this.#lastId = msg.cursor;
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
        // "subscribed" needs no action (our own set is authoritative), and unknown types
        // are ignored so that newer servers can add messages.
        break;
    }
  }

  #setState(state, detail, force = false) {
    if (state === this.#state && !force) return;
    this.#state = state;
    emit(this.#stateListeners, state, detail);
  }
}

// --- helpers ------------------------------------------------------------------

function resolveUrl(raw) {
  const base = globalThis.location?.href;
  const url = base === undefined ? new URL(raw) : new URL(raw, base);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  else if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new TypeError(`sqla-notify: not a WebSocket URL: ${url.href}`);
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

// Keeps any query parameters of its own (e.g. a token) and sets ours. Built by hand
// rather than with URLSearchParams so that the separator stays a literal comma.
function buildUrl(raw, collections, lastId) {
  const url = resolveUrl(raw);
  url.searchParams.delete("collections");
  url.searchParams.delete("last_id");
  const parts = [];
  if (url.search) parts.push(url.searchParams.toString());
  if (collections) parts.push("collections=" + [...collections].map(encodeURIComponent).join(","));
  if (lastId != null) parts.push("last_id=" + encodeURIComponent(String(lastId)));
  url.search = parts.join("&");
  return url.href;
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
