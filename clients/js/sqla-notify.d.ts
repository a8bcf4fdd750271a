/**
 * Browser client for sqla_notify: receives the notifications of committed SQLAlchemy
 * changes over a WebSocket (or Server-Sent Events where WebSocket is blocked), resuming
 * after a drop without losing any.
 *
 * ```ts
 * import { connect } from "sqla-notify"; // the npm package; or "/notify/sqla-notify.js"
 *
 * const client = connect("/notify/ws");
 * const off = client.subscribe("posts", { where: { forum_id: 7 } }, (n) => {
 *   if (n.move === "leave" || n.action === "delete") removePost(n.data?.id);
 *   else showPost(n.data?.id);
 * });
 * client.onResync(() => reloadEverything());
 * ```
 *
 * Typed payloads: pass a map of collections, e.g. the one `python -m sqla_notify.typescript`
 * generates, as `connect<Collections>(...)`; without one, payloads are untyped.
 *
 * With tokens that expire, pass {@link ConnectOptions.auth}: it is called before every
 * connection attempt, so a tab left open re-authenticates after the server closes an
 * expired connection (code 4401).
 *
 * The wire protocol this client speaks (messages, cursors, close codes) is described once,
 * in the project's docs/protocol.md; usage, Angular and React recipes are in docs/client.md.
 *
 * @packageDocumentation
 */

/** The collection name that subscribes to every collection the server lets this client see. */
export declare const ALL: "*";

/** The request header that tells the server which connection a change comes from. */
export declare const CONNECTION_HEADER: "X-Notify-Connection";

/**
 * What each collection's notifications carry: `data` (the payload) and `old` (the changed
 * columns' previous values), per collection name. `python -m sqla_notify.typescript`
 * writes one for your models, as `export interface Collections { posts: { data: ...; old: ... } }`.
 * An interface fits: the constraint is `C extends CollectionMap<C>` (no index signature needed).
 */
export type CollectionMap<C = any> = { [K in keyof C]: { data: unknown; old: unknown } };

/** The default map: any collection, untyped payloads. */
export type Untyped = Record<string, { data: any; old: any }>;

/** One committed change, as sent by the server. */
export interface Notification<Data = Record<string, any>, Old = Record<string, any>, Name extends string = string> {
  /** Opaque cursor of this notification. Never parse or compare it. */
  readonly id: string;
  /** What changed: by default the table name, e.g. `"forums"`. */
  readonly collection: Name;
  /** How it changed: `"insert"`, `"update"`, `"delete"`, or any action sent by the app. */
  readonly action: "insert" | "update" | "delete" | (string & {});
  /**
   * The payload chosen on the server (by default the primary key, e.g. `{ id: 7 }`).
   * Absent when the rows affected are not known: reload the whole collection.
   */
  readonly data?: Data;
  /**
   * For an update of a model with `NotifyOptions(old=True)`: the values the changed columns
   * had before the transaction, e.g. `{ forum_id: 7 }` (excluded columns never appear).
   * Absent otherwise, and when the notification was too large to send with its values.
   */
  readonly old?: Old;
  /**
   * For a subscription with `where`: `"leave"` when this update moved the row out of it
   * (remove the row), `"enter"` when it moved the row into it. Absent for other updates,
   * inserts, deletes, and when it cannot be told (docs/client.md, "Enter and leave").
   */
  readonly move?: "enter" | "leave";
  /**
   * `true` on a frame sent to catch up a subscription made with `since`: older than what
   * the client already received, so `lastId` does not move to it.
   */
  readonly replay?: true;
}

/** The notification of collection `K` of the map `C`, e.g. `NotificationOf<Collections, "posts">`. */
export type NotificationOf<C extends CollectionMap<C>, K extends keyof C & string> = Notification<C[K]["data"], C[K]["old"], K>;

/** A notification of any collection of the map, told apart by `collection`. */
export type AnyNotification<C extends CollectionMap<C> = Untyped> = {
  [K in keyof C & string]: Notification<C[K]["data"], C[K]["old"], K>;
}[keyof C & string];

/** A value a filter compares with: JSON scalars, compared as JSON values (`1` is not `"1"`). */
export type WhereValue = string | number | boolean | null;

/**
 * A filter: column names the model declares in `NotifyOptions(filter_by=...)`, each with a
 * value or a non-empty list of values (any of them). Keys are ANDed.
 */
export type Where = { readonly [column: string]: WhereValue | readonly WhereValue[] };

/** A subscription entry as the protocol spells it: a collection name, or one with a filter. */
export type SubscriptionEntry = string | { readonly collection: string; readonly where: Where };

/** Options of {@link NotifyClient.subscribe}. */
export interface SubscribeOptions {
  /** Only the rows that match: e.g. `{ forum_id: 7 }` or `{ forum_id: [7, 8], status: "open" }`. */
  where?: Where | null;
  /**
   * Catch up from this cursor first, e.g. the `X-Notify-Cursor` header of the REST response
   * the data shown came from: `{ since: response.headers.get("X-Notify-Cursor") }` (`null`
   * means none). Over WebSocket, the server sends what this subscription matches after the
   * cursor (frames with `replay: true`), then the live stream. It applies to a new
   * subscription: one already live on this client (same collection and `where`) received
   * what it matched all along, and the cursor is ignored. Over SSE it is the position to
   * start from when the client has none yet; later ones are ignored.
   */
  since?: string | null;
}

/** Sent when the server cannot replay what the client missed. */
export interface ResyncMessage {
  readonly type: "resync";
  /** The server's current position; the client has already adopted it as `lastId`. */
  readonly cursor: string;
  /** Why, e.g. the client's `lastId` was too old or its queue overflowed. */
  readonly reason?: string;
}

/** Sent when the server rejected the client's last message; the connection stays open. */
export interface ServerErrorMessage {
  readonly type: "error";
  readonly message: string;
}

/**
 * - `"connecting"`: handshaking, or waiting to retry after a drop.
 * - `"open"`: connected; notifications flow.
 * - `"closed"`: final. After {@link NotifyClient.close}, or when the server closed with
 *   code 1008 (not authenticated or not authorized). The client will not reconnect.
 *   Code 4401 (credentials expired) is not final: the client reconnects, calling
 *   {@link ConnectOptions.auth} for fresh credentials.
 */
export type ConnectionState = "connecting" | "open" | "closed";

/** The transport of a connection: a WebSocket, or Server-Sent Events (`/events`). */
export type Transport = "websocket" | "sse";

/** Why the state changed, passed with `"closed"` and with `"connecting"` after a drop. */
export interface StateChangeDetail {
  /**
   * The WebSocket close code, e.g. 1008 (not authenticated: final), 4401 (credentials
   * expired: reconnecting with fresh ones), 1013 (try again later), 1001 or 1012 (the
   * server is going away: reconnecting at once, within 250 ms, with the last id; an SSE
   * stream's `goaway` is reported as 1001), 1006 (connection lost, `auth` failed, or the
   * event stream failed).
   */
  readonly code: number;
  readonly reason: string;
  /** Milliseconds until the next attempt; present when the state is `"connecting"`. */
  readonly retryIn?: number;
}

/**
 * What {@link ConnectOptions.auth} returns.
 *
 * - `{ token }`: sent in the handshake's `Sec-WebSocket-Protocol` header (as
 *   `sqla-notify.bearer.<base64url of the token>`, next to `sqla-notify`), where the server
 *   reads it with `bearer_token(conn)`. Unlike a query parameter it is not written to
 *   access logs. Browsers cannot send other headers (`Authorization`) with a WebSocket.
 *   An event stream (SSE) cannot carry a token at all: it authenticates with cookies.
 * - nothing (`undefined`, `null`, `{}`): no token; cookies go with the handshake as always.
 *   E.g. `auth` refreshed the session cookie with a `fetch` first.
 */
export interface AuthCredentials {
  readonly token?: string | null;
}

/** The WebSocket constructor the client needs: the browser's, Node 22's, or the `ws` package's. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => {
  readonly readyState: number;
  // Events typed `any`: the DOM's handlers take a CloseEvent, `ws`'s its own event types.
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
};

/** The EventSource constructor the client needs for its SSE fallback. */
export type EventSourceConstructor = new (url: string) => {
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  close(): void;
};

export interface ConnectOptions {
  /**
   * Called before every connection attempt, first and reconnections alike, so that each
   * handshake carries fresh credentials: e.g. `async () => ({ token: await getToken() })`.
   * When the server closes with 4401 (credentials expired), the client reconnects (within
   * `minDelay` after a connection that lasted `stableAfter`) and calls it again. A call that
   * throws or rejects is reported and counts as a failed attempt (retried with backoff); to
   * stop, call {@link NotifyClient.close}. With `auth`, the socket opens once it resolves.
   * Default: none (cookies only).
   */
  auth?: () => AuthCredentials | null | undefined | void | Promise<AuthCredentials | null | undefined | void>;
  /**
   * Resume after this notification id: e.g. a cursor the server rendered into the page
   * together with the data (or a response's `X-Notify-Cursor` header), so that nothing
   * committed in between is missed.
   * Default: none; the client starts from the server's position when it first connects.
   */
  lastId?: string | null;
  /**
   * Shortest wait before reconnecting, in ms. Default 500. (A server that served this
   * connection and goes away, 1001 or 1012, is rejoined within 250 ms instead.)
   */
  minDelay?: number;
  /** Longest wait before reconnecting, in ms. Default 30000. */
  maxDelay?: number;
  /**
   * A connection that stays open this long (ms) resets the backoff to `minDelay`.
   * Default 10000.
   */
  stableAfter?: number;
  /**
   * - `"auto"` (default): WebSocket; after two WebSocket attempts in a row that never
   *   opened (a proxy that blocks the upgrade), it tries SSE every other attempt, and keeps
   *   SSE once that opened (while no WebSocket ever did). Without a WebSocket
   *   implementation, SSE from the start.
   * - `"websocket"` or `"sse"`: that one only.
   */
  transport?: "auto" | Transport;
  /**
   * The event stream's URL. Default: the WebSocket URL with its final `/ws` replaced by
   * `/events` (`/notify/ws` → `/notify/events`).
   */
  eventsUrl?: string | URL | (() => string | URL);
  /**
   * WebSocket implementation to use, e.g. in tests or in Node 20 (Node 22 and browsers have
   * a global one). Default `globalThis.WebSocket`. Called as `new WebSocket(url)`, or
   * `new WebSocket(url, protocols)` when `auth` supplied a token.
   */
  WebSocket?: WebSocketConstructor;
  /** EventSource implementation for the SSE fallback. Default `globalThis.EventSource`. */
  EventSource?: EventSourceConstructor;
  /** The `fetch` that {@link NotifyClient.fetch} calls. Default `globalThis.fetch`. */
  fetch?: (input: any, init?: any) => Promise<any>;
}

/** Removes the listener or subscription it was returned for. Calling it again does nothing. */
export type Unsubscribe = () => void;

/**
 * A client: one connection, shared by every subscription of the page.
 *
 * @typeParam C the collections and their payloads ({@link CollectionMap}); untyped by default.
 */
export interface NotifyClient<C extends CollectionMap<C> = Untyped> {
  /** Current connection state. */
  readonly state: ConnectionState;
  /** The transport of the current (or last) connection; `null` before the first attempt. */
  readonly transport: Transport | null;
  /**
   * Id of the last notification received (or the cursor of the last `resync`, or of the
   * first `welcome` when there was none yet). Sent as `last_id` when reconnecting. Frames
   * with `replay: true` do not move it.
   */
  readonly lastId: string | null;
  /**
   * This connection's id, from the server's `welcome`; `null` while not connected. Sent in
   * the `X-Notify-Connection` header by {@link headers} and {@link fetch}: the server then
   * does not send this connection the changes that request commits (echo suppression).
   */
  readonly connection: string | null;
  /**
   * The subscriptions requested from the server, one per distinct collection and `where`
   * with at least one callback, or `null` for all collections while a `"*"` callback exists.
   */
  readonly collections: SubscriptionEntry[] | null;

  /**
   * Call `callback` for each notification of `collection`; `"*"` means every collection
   * this client may see. With `options.where`, only for the rows that match the filter
   * before or after the change; a row that leaves it arrives with `move: "leave"`.
   *
   * Subscriptions are server-side, one per distinct collection and `where`: the first
   * callback sends `subscribe`, removing the last one sends `unsubscribe` (batched per
   * task). Adding or removing the first/last `"*"` callback reconnects at once, resuming
   * from `lastId`, because the protocol expresses "all" only in the handshake. Over SSE,
   * any change of subscriptions reconnects. A function subscribed twice is called twice.
   *
   * A callback that throws is reported (`reportError`, else `console.error`) and does not
   * affect the client or other callbacks. The notification object may be shared between
   * callbacks: do not mutate it. After a reconnect, callbacks may receive notifications
   * that were committed while the client was offline (that is the point of resuming).
   *
   * @returns a function that removes this subscription.
   * @throws TypeError for an empty name, a malformed `where`, a `since` that is not a
   *   string, or `where`/`since` with `"*"`.
   */
  subscribe(collection: typeof ALL, callback: (notification: AnyNotification<C>) => void): Unsubscribe;
  subscribe<K extends keyof C & string>(
    collection: K,
    callback: (notification: Notification<C[K]["data"], C[K]["old"], K>) => void,
  ): Unsubscribe;
  subscribe<K extends keyof C & string>(
    collection: K,
    options: SubscribeOptions,
    callback: (notification: Notification<C[K]["data"], C[K]["old"], K>) => void,
  ): Unsubscribe;

  /**
   * The headers that mark a request as this connection's:
   * `{ "X-Notify-Connection": id }`, or `{}` while not connected. Spread them into your
   * own requests: `fetch(url, { method: "POST", headers: { ...client.headers() } })`.
   */
  headers(): Record<string, string>;

  /**
   * `fetch` with {@link headers} added: the changes this request commits are not sent back
   * to this connection (the server's `notify_origin` dependency reads the header).
   */
  fetch(input: string | URL | Request, init?: RequestInit): Promise<Response>;

  /**
   * Called when notifications were lost (the server could not replay them): reload all
   * data shown. `lastId` has already moved to `message.cursor`. With no listener
   * registered, the client only logs a `console.warn`.
   */
  onResync(listener: (message: ResyncMessage) => void): Unsubscribe;

  /**
   * Called on each state change, and again for each failed reconnection attempt (with the
   * delay before the next one). A `"closed"` state with `detail.code === 1008` means the
   * server refused this user: sign in again, then create a new client. A `"connecting"`
   * state with `detail.code === 4401` means the credentials expired: the client is
   * reconnecting with fresh ones from `auth`.
   */
  onStateChange(
    listener: (state: ConnectionState, detail?: StateChangeDetail) => void,
  ): Unsubscribe;

  /**
   * Called when the server rejects a message of this client (e.g. a subscription to an
   * unknown collection, or a filter on an undeclared column). With no listener registered,
   * the client logs a `console.warn`.
   */
  onError(listener: (message: ServerErrorMessage) => void): Unsubscribe;

  /** Close the connection for good and stop reconnecting. Create a new client to start over. */
  close(): void;
}

/**
 * Create a client and start connecting.
 *
 * @param url WebSocket endpoint. A relative URL such as `"/notify/ws"` is resolved against
 *   `location`, `http:`/`https:` becoming `ws:`/`wss:`. A function is called before each
 *   connection attempt. Query parameters of the URL are kept; `collections` and `last_id`
 *   are set by the client. Do not put a token in the URL: it ends up in access logs. Use
 *   `options.auth`.
 * @typeParam C the collections and their payloads, e.g. the `Collections` interface that
 *   `python -m sqla_notify.typescript` writes; untyped by default.
 *
 * The connection opens in a microtask, so subscriptions made synchronously after
 * `connect()` are part of the first handshake rather than separate messages. With no
 * callbacks at that point the client connects subscribed to nothing and subscribes as
 * callbacks arrive.
 *
 * @throws TypeError if `url` is not a valid http(s)/ws(s) URL, no WebSocket (nor
 *   EventSource) is available for `options.transport`, or `options.auth` is not a function.
 */
export declare function connect<C extends CollectionMap<C> = Untyped>(
  url: string | URL | (() => string | URL),
  options?: ConnectOptions,
): NotifyClient<C>;
