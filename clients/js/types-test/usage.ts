// Compiled by `tsc -p types-test` (never run): the declarations as apps use them. Lines
// marked @ts-expect-error must fail to compile, so the types reject what they should.
// It imports the package by its own name ("sqla-notify"), through package.json's exports.
import {
  ALL,
  CONNECTION_HEADER,
  connect,
  type AnyNotification,
  type ConnectionState,
  type Notification,
  type NotificationOf,
  type SubscribeOptions,
  type Where,
  type SubscriptionEntry,
} from "sqla-notify";

// --- untyped (the default) ----------------------------------------------------------
const client = connect("/notify/ws", {
  auth: async () => ({ token: "t" }),
  lastId: null,
  transport: "auto",
  eventsUrl: "/notify/events",
  WebSocket, // the DOM's constructor fits the option
  EventSource,
  fetch,
});
const off = client.subscribe("forums", (n) => {
  const id: unknown = n.data?.id; // untyped payloads are `any`
  const action: string = n.action;
  void [id, action];
});
off();
client.subscribe("posts", { where: { forum_id: 7 } }, (n) => {
  if (n.move === "leave") console.log("left", n.data?.id);
  if (n.replay) console.log("catching up");
});
client.subscribe("posts", { where: { forum_id: [7, 8], status: "open", pinned: null } }, () => {});
client.subscribe(ALL, (n) => console.log(n.collection));
// @ts-expect-error: a filter value is a JSON scalar or a list of them
client.subscribe("posts", { where: { forum_id: { gt: 7 } } }, () => {});
// @ts-expect-error: move is "enter" or "leave"
client.subscribe("posts", (n) => n.move === "moved");

// Snapshot, then changes: resume from the REST response's cursor.
async function snapshot(): Promise<void> {
  const response = await client.fetch("/api/posts?forum_id=7", { method: "GET" });
  client.subscribe("posts", { where: { forum_id: 7 }, since: response.headers.get("X-Notify-Cursor") }, () => {});
  await fetch("/api/posts", { method: "POST", headers: { ...client.headers(), "Content-Type": "application/json" } });
}
void snapshot;
const header: "X-Notify-Connection" = CONNECTION_HEADER;
const who: string | null = client.connection;
const entries: SubscriptionEntry[] | null = client.collections;
const state: ConnectionState = client.state;
const transport: "websocket" | "sse" | null = client.transport;
client.onStateChange((s, detail) => console.log(s, detail?.code, detail?.retryIn));
client.onResync((m) => console.log(m.cursor, m.reason));
client.onError((m) => console.log(m.message));
client.close();
void [header, who, entries, state, transport];

// --- typed, with a map like the one `python -m sqla_notify.typescript` writes ---------
interface Collections {
  posts: { data: { id: number; forum_id: number; title: string }; old: { forum_id?: number; title?: string } };
  forums: { data: { id: number }; old: Record<string, never> };
}
const typed = connect<Collections>("/notify/ws");
typed.subscribe("posts", { where: { forum_id: 7 } }, (n) => {
  const title: string | undefined = n.data?.title;
  const before: number | undefined = n.old?.forum_id;
  const name: "posts" = n.collection;
  void [title, before, name];
  // @ts-expect-error: posts have no such column
  void n.data?.body;
});
typed.subscribe("forums", (n: Notification<{ id: number }, Record<string, never>, "forums">) => void n.data?.id);
typed.subscribe("*", (n: AnyNotification<Collections>) => {
  if (n.collection === "posts") {
    const forum: number | undefined = n.data?.forum_id; // narrowed by collection
    void forum;
  }
});
// @ts-expect-error: not a collection of the map
typed.subscribe("comments", () => {});

// The shapes of docs/client.md's recipes, with a stand-in for RxJS's Observable.
class Observable<T> {
  constructor(readonly subscribe: (subscriber: { next(value: T): void }) => () => void) {}
}
class NotifyService {
  readonly client = connect<Collections>("/notify/ws");
  changes<K extends keyof Collections & string>(collection: K, options: SubscribeOptions = {}): Observable<NotificationOf<Collections, K>> {
    return new Observable((subscriber) => this.client.subscribe(collection, options, (n) => subscriber.next(n)));
  }
}
new NotifyService().changes("posts", { where: { forum_id: 7 } }).subscribe({ next: (n) => void n.data?.title });
function useNotifications(collection: string, callback: (n: Notification) => void, where?: Where): () => void {
  return client.subscribe(collection, { where: where ?? null }, (n) => callback(n));
}
void useNotifications;
