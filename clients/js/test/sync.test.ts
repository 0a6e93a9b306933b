import { test } from "node:test";
import assert from "node:assert/strict";
import { SyncState, backoffMs, tokenExpiry } from "../src/sync.js";
import type { SyncAction } from "../src/sync.js";
import { parseServerFrame } from "../src/frames.js";
import type { Message, SyncItem } from "../src/frames.js";

function message(id: string, seq: number, syncSeq?: number): Message {
  return {
    message_id: id,
    conversation_id: "dm:alice:bob",
    seq,
    sender_id: "alice",
    kind: "text",
    body: { text: id },
    sent_at: "2026-12-01T00:00:00.000Z",
    ...(syncSeq !== undefined ? { sync_seq: syncSeq } : {}),
  };
}

function item(id: string, seq: number, syncSeq: number): SyncItem {
  return { type: "message", ...message(id, seq), sync_seq: syncSeq };
}

const shown = (actions: SyncAction[]) =>
  actions.flatMap((a) => (a.kind === "show" ? [a.message.message_id] : []));
const syncs = (actions: SyncAction[]) => actions.flatMap((a) => (a.kind === "sync" ? [a.after] : []));

test("a message pushed fast and then with its sync_seq is shown once", () => {
  const state = new SyncState();
  state.page([], 0, false);
  assert.deepEqual(shown(state.message(message("m1", 1))), ["m1"]);
  const second = state.message(message("m1", 1, 1));
  assert.deepEqual(shown(second), []);
  assert.deepEqual(second, [{ kind: "delivered", syncSeq: 1 }]);
  assert.equal(state.cursor, 1);
});

test("a gap in sync_seq asks for the log from the cursor and the page fills it", () => {
  const state = new SyncState(2);
  state.page([], 2, false);
  const gap = state.message(message("m5", 5, 5));
  assert.deepEqual(shown(gap), ["m5"]);
  assert.deepEqual(syncs(gap), [2], "sync after the cursor");
  assert.equal(state.cursor, 2, "the cursor does not jump the gap");
  // Pushes while the sync is on its way do not move the cursor either.
  assert.deepEqual(syncs(state.message(message("m6", 6, 6))), []);
  const page = state.page([item("m3", 3, 3), item("m4", 4, 4), item("m5", 5, 5)], 5, false);
  assert.deepEqual(shown(page), ["m3", "m4"], "m5 was shown already");
  assert.equal(state.cursor, 5);
  assert.deepEqual(syncs(page), [5], "m6 arrived past the page: sync again");
  const last = state.page([item("m6", 6, 6)], 6, false);
  assert.deepEqual(shown(last), []);
  assert.deepEqual(syncs(last), []);
  assert.equal(state.cursor, 6);
});

test("pages follow has_more, changes pass through, old items are skipped", () => {
  const state = new SyncState();
  state.connected();
  const first = state.page([item("a", 1, 1), item("b", 2, 2)], 2, true);
  assert.deepEqual(shown(first), ["a", "b"]);
  assert.deepEqual(syncs(first), [2]);
  const edit: SyncItem = { type: "edit", sync_seq: 3, conversation_id: "dm:alice:bob", seq: 1 };
  const second = state.page([item("b", 2, 2), edit], 3, false);
  assert.deepEqual(shown(second), []);
  assert.deepEqual(
    second.filter((a) => a.kind === "change"),
    [{ kind: "change", item: edit }],
  );
  assert.ok(second.some((a) => a.kind === "delivered" && a.syncSeq === 3));
});

test("a cursor below the compacted log asks for a resync from next", () => {
  const state = new SyncState(3);
  state.connected();
  assert.deepEqual(state.page([], 40, true, true), [{ kind: "resync", next: 40 }]);
  assert.equal(state.cursor, 40);
});

test("a reconnect syncs from the cursor it reached", () => {
  const state = new SyncState();
  state.page([item("a", 1, 1)], 1, false);
  state.disconnected();
  assert.deepEqual(state.connected(), [{ kind: "sync", after: 1 }]);
});

test("backoff doubles to its cap with ±50 % jitter", () => {
  assert.equal(backoffMs(0, 500, 30_000, () => 0.5), 500);
  assert.equal(backoffMs(3, 500, 30_000, () => 0.5), 4_000);
  assert.equal(backoffMs(20, 500, 30_000, () => 0.5), 30_000);
  assert.equal(backoffMs(0, 500, 30_000, () => 0), 250);
  assert.equal(backoffMs(0, 500, 30_000, () => 0.999), 750);
});

test("a token's expiry is read from its payload", () => {
  const payload = Buffer.from(JSON.stringify({ sub: "alice", exp: 1_800_000_000 })).toString("base64url");
  assert.equal(tokenExpiry(`x.${payload}.y`), 1_800_000_000);
  assert.equal(tokenExpiry("garbage"), undefined);
});

test("server frames are checked before they are used", () => {
  assert.deepEqual(parseServerFrame('{"op":"pong"}'), { op: "pong" });
  assert.match(JSON.stringify(parseServerFrame("{nope")), /not JSON/);
  assert.match(JSON.stringify(parseServerFrame('{"op":"warp"}')), /unknown op/);
  assert.match(JSON.stringify(parseServerFrame('{"op":"ack","client_msg_id":"c1"}')), /ack without string message_id/);
  assert.match(JSON.stringify(parseServerFrame('[1]')), /not a JSON object/);
});
