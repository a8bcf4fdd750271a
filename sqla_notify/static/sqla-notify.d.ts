/**
 * Browser client for sqla_notify: receives the notifications of committed SQLAlchemy
 * changes over a WebSocket, resuming after a drop without losing any.
 *
 * ```ts
 * import { connect } from "/notify/sqla-notify.js";
 *
 * const client = connect("/notify/ws");
 * const off = client.subscribe("forums", (n) => reloadForum(n.data?.id));
 * client.onResync(() => reloadEverything());
 * ```
 *
 * With tokens that expire, pass {@link ConnectOptions.auth}: it is called before every
 * connection attempt, so a tab left open re-authenticates after the server closes an
 * expired connection (code 4401).
 *
 * The wire protocol this client speaks (messages, cursors, close codes) is described once,
 * in the project's docs/protocol.md; Angular and React recipes are in docs/client.md.
 *
 * @packageDocumentation
 */

/** The collection name that subscribes to every collection the server lets this client see. */
export declare const ALL: "*";

/** One committed change, as sent by the server. */
export interface Notification<Data = Record<string, unknown>> {
  /** Opaque cursor of this notification. Never parse or compare it. */
  readonly id: string;
  /** What changed: by default the table name, e.g. `"forums"`. */
  readonly collection: string;
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
  readonly old?: Record<string, unknown>;
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

/** Why the state changed, passed with `"closed"` and with `"connecting"` after a drop. */
export interface StateChangeDetail {
  /**
   * The WebSocket close code, e.g. 1008 (not authenticated: final), 4401 (credentials
   * expired: reconnecting with fresh ones), 1013 (try again later), 1006 (connection lost,
   * or `auth` failed).
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
 * - nothing (`undefined`, `null`, `{}`): no token; cookies go with the handshake as always.
 *   E.g. `auth` refreshed the session cookie with a `fetch` first.
 */
export interface AuthCredentials {
  readonly token?: string | null;
}

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
   * together with the data, so that nothing committed in between is missed.
   * Default: none; the client starts from the server's position when it first connects.
   */
  lastId?: string | null;
  /** Shortest wait before reconnecting, in ms. Default 500. */
  minDelay?: number;
  /** Longest wait before reconnecting, in ms. Default 30000. */
  maxDelay?: number;
  /**
   * A connection that stays open this long (ms) resets the backoff to `minDelay`.
   * Default 10000.
   */
  stableAfter?: number;
  /**
   * WebSocket implementation to use, e.g. in tests or outside a browser. Default
   * `globalThis.WebSocket`. Called as `new WebSocket(url)`, or `new WebSocket(url, protocols)`
   * when `auth` supplied a token.
   */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
}

/** Removes the listener or subscription it was returned for. Calling it again does nothing. */
export type Unsubscribe = () => void;

export interface NotifyClient {
  /** Current connection state. */
  readonly state: ConnectionState;
  /**
   * Id of the last notification received (or the cursor of the last `resync`, or of the
   * first `welcome` when there was none yet). Sent as `last_id` when reconnecting.
   */
  readonly lastId: string | null;
  /**
   * The collections requested from the server: those with at least one callback, or
   * `null` for all of them while a `"*"` callback exists.
   */
  readonly collections: string[] | null;

  /**
   * Call `callback` for each notification of `collection`; `"*"` means every collection
   * this client may see.
   *
   * Subscriptions are server-side: the first callback for a collection sends `subscribe`,
   * removing the last one sends `unsubscribe` (batched per task). Adding or removing the
   * first/last `"*"` callback reconnects at once, resuming from `lastId`, because the
   * protocol expresses "all" only in the handshake. A function subscribed both to a
   * collection and to `"*"` is called twice.
   *
   * A callback that throws is reported (`reportError`, else `console.error`) and does not
   * affect the client or other callbacks. The notification object is shared between
   * callbacks: do not mutate it. After a reconnect, callbacks may receive notifications
   * that were committed while the client was offline (that is the point of resuming).
   *
   * @returns a function that removes this subscription.
   */
  subscribe<Data = Record<string, unknown>>(
    collection: string,
    callback: (notification: Notification<Data>) => void,
  ): Unsubscribe;

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
   * unknown collection). With no listener registered, the client logs a `console.warn`.
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
 *
 * The socket opens in a microtask, so subscriptions made synchronously after `connect()`
 * are part of the first handshake rather than separate messages. With no callbacks at that
 * point the client connects subscribed to nothing and subscribes as callbacks arrive.
 *
 * @throws TypeError if `url` is not a valid http(s)/ws(s) URL, no WebSocket is available, or
 *   `options.auth` is not a function.
 */
export declare function connect(
  url: string | URL | (() => string | URL),
  options?: ConnectOptions,
): NotifyClient;
