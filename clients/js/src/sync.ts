/**
 * The pure core of a device's push-pull sync: what to show, what changed,
 * and when to ask the server for the sync log. No I/O: the client feeds it
 * frames and carries out the actions it returns, and the unit tests feed it
 * frames in any order.
 *
 * The rules (docs/PROTOCOL.md): a message is shown once, by `message_id`,
 * whether it came pushed from the commit (no `sync_seq`), pushed with its
 * `sync_seq`, or in a sync page. The cursor is the highest `sync_seq`
 * applied with nothing missing below it; a pushed `sync_seq` past
 * `cursor + 1` is a gap, filled by `sync` from the cursor, page after page.
 */

import type { Message, SyncItem } from "./frames.js";

export type SyncAction =
  /** A message this device has not shown yet. */
  | { kind: "show"; message: Message }
  /** An edit, recall, read or reaction from the sync log. */
  | { kind: "change"; item: SyncItem }
  /** Ask for the sync log after `after`. */
  | { kind: "sync"; after: number }
  /** The cursor is below the compacted log: re-read conversations and
   * history, then sync from `next`. */
  | { kind: "resync"; next: number }
  /** Report to the server that everything up to `syncSeq` is here. */
  | { kind: "delivered"; syncSeq: number };

/** A set of the most recent `limit` keys. */
class RecentSet {
  private readonly keys = new Set<string>();
  constructor(private readonly limit: number) {}
  has(key: string): boolean {
    return this.keys.has(key);
  }
  add(key: string): void {
    this.keys.delete(key);
    this.keys.add(key);
    if (this.keys.size > this.limit) {
      const oldest = this.keys.values().next();
      if (!oldest.done) this.keys.delete(oldest.value);
    }
  }
}

export class SyncState {
  /** The highest sync_seq applied with nothing missing below it. */
  cursor: number;
  private syncing = false;
  private highestSeen: number;
  private readonly shown: RecentSet;

  constructor(cursor = 0, remember = 10_000) {
    this.cursor = cursor;
    this.highestSeen = cursor;
    this.shown = new RecentSet(remember);
  }

  /** The connection is (re)established: catch up from the cursor. */
  connected(): SyncAction[] {
    this.syncing = true;
    return [{ kind: "sync", after: this.cursor }];
  }

  /** The connection is gone: a sync in flight will not be answered. */
  disconnected(): void {
    this.syncing = false;
  }

  /** A pushed `message` frame. */
  message(message: Message): SyncAction[] {
    const actions: SyncAction[] = [];
    if (!this.shown.has(message.message_id)) {
      this.shown.add(message.message_id);
      actions.push({ kind: "show", message });
    }
    if (message.sync_seq !== undefined) actions.push(...this.position(message.sync_seq));
    return actions;
  }

  /** Any other pushed frame that carries a `sync_seq` (a read mark). */
  positioned(syncSeq: number): SyncAction[] {
    return this.position(syncSeq);
  }

  private position(syncSeq: number): SyncAction[] {
    this.highestSeen = Math.max(this.highestSeen, syncSeq);
    if (syncSeq <= this.cursor || this.syncing) return [];
    if (syncSeq === this.cursor + 1) {
      this.cursor = syncSeq;
      return [{ kind: "delivered", syncSeq }];
    }
    // A gap: what lies between comes from the log.
    this.syncing = true;
    return [{ kind: "sync", after: this.cursor }];
  }

  /** A `sync_result` page. */
  page(items: SyncItem[], next: number, hasMore: boolean, resync = false): SyncAction[] {
    if (resync) {
      this.syncing = false;
      this.cursor = Math.max(this.cursor, next);
      this.highestSeen = Math.max(this.highestSeen, this.cursor);
      return [{ kind: "resync", next }];
    }
    const actions: SyncAction[] = [];
    const before = this.cursor;
    for (const item of items) {
      if (item.sync_seq <= this.cursor) continue;
      this.cursor = item.sync_seq;
      if (item.type === "message") {
        const { type: _type, ...message } = item;
        if (!this.shown.has(message.message_id)) {
          this.shown.add(message.message_id);
          actions.push({ kind: "show", message: message as Message });
        }
      } else {
        actions.push({ kind: "change", item });
      }
    }
    this.highestSeen = Math.max(this.highestSeen, this.cursor);
    if (this.cursor > before) actions.push({ kind: "delivered", syncSeq: this.cursor });
    if (hasMore) {
      actions.push({ kind: "sync", after: Math.max(this.cursor, next) });
    } else if (this.highestSeen > this.cursor) {
      // Pushes past this page arrived while it was on its way.
      actions.push({ kind: "sync", after: this.cursor });
    } else {
      this.syncing = false;
    }
    return actions;
  }
}

/**
 * How long to wait before reconnect attempt `attempt` (0-based): doubling
 * from `baseMs` up to `capMs`, then ±50 % of jitter so that clients a
 * gateway dropped together do not come back together.
 */
export function backoffMs(attempt: number, baseMs = 500, capMs = 30_000, random: () => number = Math.random): number {
  const exponential = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(exponential * (0.5 + random()));
}

/** The `exp` (seconds since the epoch) of a JWT, if it has one. */
export function tokenExpiry(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (payload === undefined) return undefined;
  try {
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const exp = (JSON.parse(json) as { exp?: unknown }).exp;
    return typeof exp === "number" ? exp : undefined;
  } catch {
    return undefined;
  }
}
