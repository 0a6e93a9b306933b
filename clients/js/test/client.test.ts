import { test } from "node:test";
import assert from "node:assert/strict";
import { ImClient, ServerError } from "../src/client.js";
import type { SocketLike } from "../src/client.js";

/** A socket the test drives: it records what the client writes. */
class FakeSocket implements SocketLike {
  static all: FakeSocket[] = [];
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  onopen: ((event: unknown) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }
  close(code = 1000, reason = ""): void {
    this.drop(code, reason);
  }
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  drop(code: number, reason: string): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  push(frame: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  ops(op: string): Record<string, unknown>[] {
    return this.sent.filter((f) => f["op"] === op);
  }
}

const fakeFetch = (async () =>
  new Response(JSON.stringify({ url: "ws://gw/v1/ws", gateway: "gw-1" }), { status: 200 })) as typeof fetch;

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.fail(`timed out waiting for ${what}`);
}

function client(): ImClient {
  FakeSocket.all = [];
  return new ImClient({ baseUrl: "http://gw", token: "t0k", WebSocket: FakeSocket, fetch: fakeFetch, backoffBaseMs: 1, backoffCapMs: 5, random: () => 0.5 });
}

/** Connect `im` and open its first socket. */
async function opened(im: ImClient): Promise<void> {
  const connected = im.connect();
  await until("a socket", () => FakeSocket.all.length === 1);
  socket(0).open();
  await connected;
}

const socket = (n: number): FakeSocket => {
  const found = FakeSocket.all[n];
  assert.ok(found, `socket ${n}`);
  return found;
};

test("unacked sends are resent with the same client_msg_id after a reconnect, and acked once", async () => {
  const im = client();
  const connected = im.connect();
  await until("a socket", () => FakeSocket.all.length === 1);
  assert.equal(socket(0).url, "ws://gw/v1/ws?token=t0k");
  socket(0).open();
  await connected;
  assert.deepEqual(socket(0).ops("sync"), [{ op: "sync", after: 0, limit: 100 }]);
  const first = im.send("dm:alice:bob", { text: "one" }, { clientMsgId: "c1" });
  const second = im.send("dm:alice:bob", { text: "two" }, { clientMsgId: "c2" });
  socket(0).push({ op: "ack", client_msg_id: "c1", message_id: "m1", conversation_id: "dm:alice:bob", seq: 1 });
  assert.equal((await first).seq, 1);
  // The connection drops before c2's ack; the client comes back and resends it.
  socket(0).drop(1006, "gone");
  await until("a second socket", () => FakeSocket.all.length === 2);
  socket(1).open();
  assert.deepEqual(
    socket(1).ops("send").map((f) => f["client_msg_id"]),
    ["c2"],
  );
  assert.deepEqual(im.unacked, ["c2"]);
  socket(1).push({ op: "ack", client_msg_id: "c2", message_id: "m2", conversation_id: "dm:alice:bob", seq: 2 });
  assert.equal((await second).message_id, "m2");
  assert.deepEqual(im.unacked, []);
  im.close();
});

test("a refused send fails with its code; a retryable one is kept", async () => {
  const im = client();
  await opened(im);
  const refused = im.send("g:x", { text: "no" }, { clientMsgId: "r1" });
  socket(0).push({ op: "error", code: "not_member", message: "not a member", client_msg_id: "r1" });
  await assert.rejects(refused, (e: unknown) => e instanceof ServerError && e.code === "not_member");
  const kept = im.send("g:x", { text: "later" }, { clientMsgId: "k1" });
  socket(0).push({ op: "error", code: "unavailable", message: "retry", client_msg_id: "k1" });
  await until("the resend", () => socket(0).ops("send").filter((f) => f["client_msg_id"] === "k1").length === 2);
  socket(0).push({ op: "ack", client_msg_id: "k1", message_id: "mk", conversation_id: "g:x", seq: 9 });
  assert.equal((await kept).seq, 9);
  im.close();
});

test("requests are answered in order; a disconnect fails the ones waiting", async () => {
  const im = client();
  await opened(im);
  const list = im.conversations();
  socket(0).push({ op: "conversations_result", items: [{ conversation_id: "g:x", last_seq: 3, read_seq: 1, unread: 2 }], total_unread: 2 });
  assert.equal((await list).total_unread, 2);
  const history = im.history("g:x", { limit: 10 });
  assert.deepEqual(socket(0).ops("history"), [{ op: "history", conversation_id: "g:x", limit: 10 }]);
  socket(0).drop(1001, "going away");
  await assert.rejects(history, /disconnected/);
  im.close();
});

test("unread counts older than the ones shown are ignored", async () => {
  const im = client();
  const seen: number[] = [];
  im.on("unread", (u) => seen.push(u.unread));
  await opened(im);
  socket(0).push({ op: "unread", conversation_id: "g:x", unread: 0, total: 0, as_of: 7 });
  socket(0).push({ op: "unread", conversation_id: "g:x", unread: 3, total: 3, as_of: 5 });
  socket(0).push({ op: "unread", conversation_id: "g:x", unread: 1, total: 1, as_of: 8 });
  assert.deepEqual(seen, [0, 1]);
  im.close();
});

test("pushed messages are shown once and acknowledged as delivered", async () => {
  const im = client();
  const shown: string[] = [];
  im.on("message", (m) => shown.push(m.message_id));
  await opened(im);
  socket(0).push({ op: "sync_result", items: [], next: 0, has_more: false });
  const m = { message_id: "m1", conversation_id: "dm:alice:bob", seq: 1, sender_id: "alice", kind: "text", body: { text: "hi" }, sent_at: "x" };
  socket(0).push({ op: "message", ...m });
  socket(0).push({ op: "message", ...m, sync_seq: 1 });
  assert.deepEqual(shown, ["m1"]);
  assert.deepEqual(socket(0).ops("delivered"), [{ op: "delivered", sync_seq: 1 }]);
  im.close();
});

test("when no gateway answers /v1/connect, the client goes to an alternative it was told of", async () => {
  FakeSocket.all = [];
  let up = true;
  const flaky = (async () => {
    if (!up) throw new Error("connection refused");
    return new Response(JSON.stringify({ url: "ws://gw1/v1/ws", gateway: "gw-1", alternatives: [{ url: "ws://gw2/v1/ws", gateway: "gw-2" }] }), { status: 200 });
  }) as typeof fetch;
  const im = new ImClient({ baseUrl: "http://gw1", token: "t0k", WebSocket: FakeSocket, fetch: flaky, backoffBaseMs: 1, backoffCapMs: 5, random: () => 0.5 });
  im.on("error", () => {});
  await opened(im);
  up = false;
  socket(0).drop(1006, "gateway killed");
  await until("a socket elsewhere", () => FakeSocket.all.length === 2);
  assert.equal(socket(1).url, "ws://gw2/v1/ws?token=t0k");
  im.close();
});

test("a refreshed answer that names another gateway does not send the client back to the one that died", async () => {
  FakeSocket.all = [];
  // First answer: gw-1, no one else yet. The refresh a couple of seconds
  // later chooses gw-2 for this user and lists gw-1, the gateway the
  // client is on, as the alternative. Then gw-1 dies and its /v1/connect
  // with it: the client must go to gw-2, not wait for gw-1 to come back.
  let calls = 0;
  let up = true;
  const answers = (async () => {
    if (!up) throw new Error("connection refused");
    calls++;
    const body =
      calls === 1
        ? { url: "ws://gw1/v1/ws", gateway: "gw-1", alternatives: [] }
        : { url: "ws://gw2/v1/ws", gateway: "gw-2", alternatives: [{ url: "ws://gw1/v1/ws", gateway: "gw-1" }] };
    return new Response(JSON.stringify(body), { status: 200 });
  }) as typeof fetch;
  const im = new ImClient({ baseUrl: "http://gw1", token: "t0k", WebSocket: FakeSocket, fetch: answers, backoffBaseMs: 1, backoffCapMs: 5, random: () => 0.5 });
  im.on("error", () => {});
  await opened(im);
  assert.equal(socket(0).url, "ws://gw1/v1/ws?token=t0k");
  for (let i = 0; i < 100 && calls < 2; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(calls, 2, "the list of gateways was refreshed");
  up = false;
  socket(0).drop(1006, "gateway killed");
  await until("a socket elsewhere", () => FakeSocket.all.length === 2);
  assert.equal(socket(1).url, "ws://gw2/v1/ws?token=t0k");
  im.close();
});

test("a gateway that comes back is not chosen again while another is live", async () => {
  FakeSocket.all = [];
  // gw-1 dies and is restarted at once: its /v1/connect answers again and,
  // with no sessions, is the least loaded. The client moves to gw-2.
  const answers = (async () =>
    new Response(JSON.stringify({ url: "ws://gw1/v1/ws", gateway: "gw-1", alternatives: [{ url: "ws://gw2/v1/ws", gateway: "gw-2" }] }), { status: 200 })) as typeof fetch;
  const im = new ImClient({ baseUrl: "http://gw1", token: "t0k", WebSocket: FakeSocket, fetch: answers, backoffBaseMs: 1, backoffCapMs: 5, random: () => 0.5 });
  await opened(im);
  socket(0).drop(1006, "gateway killed");
  await until("a socket elsewhere", () => FakeSocket.all.length === 2);
  assert.equal(socket(1).url, "ws://gw2/v1/ws?token=t0k");
  im.close();
});

test("a gateway that never opens is skipped for an alternative while it is still registered", async () => {
  FakeSocket.all = [];
  const stale = (async () =>
    new Response(JSON.stringify({ url: "ws://dead/v1/ws", gateway: "dead", alternatives: [{ url: "ws://alive/v1/ws", gateway: "alive" }] }), { status: 200 })) as typeof fetch;
  const im = new ImClient({ baseUrl: "http://any", token: "t0k", WebSocket: FakeSocket, fetch: stale, backoffBaseMs: 1, backoffCapMs: 5, random: () => 0.5 });
  const connected = im.connect();
  await until("a socket", () => FakeSocket.all.length === 1);
  assert.equal(socket(0).url, "ws://dead/v1/ws?token=t0k");
  socket(0).drop(1006, "refused");
  await until("a second socket", () => FakeSocket.all.length === 2);
  assert.equal(socket(1).url, "ws://alive/v1/ws?token=t0k");
  socket(1).open();
  await connected;
  im.close();
});

test("a token about to expire is replaced in the session with the auth frame", async () => {
  FakeSocket.all = [];
  const jwt = (exp: number) => `h.${Buffer.from(JSON.stringify({ sub: "alice", exp })).toString("base64url")}.s`;
  // Expires in 61 s: the refresh is due a minute before, in about a second.
  const first = jwt(Math.floor(Date.now() / 1000) + 61);
  const fresh = jwt(Math.floor(Date.now() / 1000) + 3600);
  const tokens = [first, fresh];
  const im = new ImClient({ baseUrl: "http://gw", token: () => tokens.shift() ?? fresh, WebSocket: FakeSocket, fetch: fakeFetch, backoffBaseMs: 1, backoffCapMs: 5, random: () => 0.5 });
  await opened(im);
  for (let i = 0; i < 60 && socket(0).ops("auth").length === 0; i++) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(socket(0).ops("auth"), [{ op: "auth", token: fresh }]);
  im.close();
});
