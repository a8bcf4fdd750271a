// Checked by tests/test_typescript.py with `tsc --strict --noEmit`, next to what
// `python -m sqla_notify.typescript tests.typescript_models:Base` writes as notifications.ts:
// what a browser app may write compiles, and each @ts-expect-error line must fail to.
import type { Collections, Filters } from "./notifications";

type Data<K extends keyof Collections> = Collections[K]["data"];

const post: Data<"posts"> = { id: 1, forum_id: 7, status: "open", title: null };
const deleted: Data<"posts"> = { id: 1 };
const old: Collections["posts"]["old"] = { title: "before", editor_id: null };
const where: Filters["posts"] = { forum_id: [7, 8], status: "closed", editor_id: null };
const member: Data<"members"> = { id: 3, level: 2 };
const sample: Data<"sample-rows"> = { id: "0b6f", price: "9.99", priority: 2, grid: [["a"]] };
const digest: Data<"digests"> = { anything: 1 };
const noData: Data<"invites"> | undefined = undefined;
const noOld: Collections["forums"]["old"] | undefined = undefined;

// @ts-expect-error: the primary key is always there
const missingKey: Data<"posts"> = { title: "x" };
// @ts-expect-error: an excluded column is never sent
const excluded: Data<"posts"> = { id: 1, secret: "s" };
// @ts-expect-error: not one of the enum's values
const badStatus: Data<"posts"> = { id: 1, status: "archived" };
// @ts-expect-error: a filter value has the column's type
const badWhere: Filters["posts"] = { forum_id: "7" };
// @ts-expect-error: only filter_by columns
const notAFilter: Filters["posts"] = { title: "x" };
// @ts-expect-error: decimals arrive as strings
const badPrice: Data<"sample-rows"> = { id: "x", price: 9.99 };
// @ts-expect-error: a model without old=True has no old
const forumOld: Collections["forums"]["old"] = { id: 1 };
// @ts-expect-error: no such collection
type Nope = Collections["nope"];

export { post, deleted, old, where, member, sample, digest, noData, noOld, missingKey, excluded, badStatus, badWhere, notAFilter, badPrice, forumOld };
export type { Nope };
