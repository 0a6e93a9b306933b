/**
 * The SDK against a real system (run by tests/pipeline/sdk.rs, which starts
 * the pipeline and two gateways and passes their addresses and tokens).
 * Alice and Bob chat through ImClient; midway the test SIGKILLs the gateway
 * Alice is connected to (it asks on stdout, then says on stdin it did),
 * while Alice keeps sending. Every message must be acked once, reach Bob
 * exactly once and in order, and Bob's unread must read 10 and then 0.
 * Prints one JSON line per step; exits non-zero on any failure.
 */

import WebSocket from "ws";
import { createInterface } from "node:readline";
import { ImClient } from "../src/index.js";
import type { Message, SocketFactory } from "../src/index.js";

const env = (name: string): string => {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`${name} is not set (tests/pipeline/sdk.rs sets it)`);
  return value;
};

const gateways = env("IM_GATEWAYS").split(",");
const say = (event: Record<string, unknown>) => console.log(JSON.stringify(event));
const conversation = "dm:alice:bob";

function fail(message: string): never {
  say({ event: "failed", message });
  process.exit(1);
}

async function within<T>(what: string, ms: number, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function eventually(what: string, ms: number, check: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) fail(`${what}: not after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const lines = createInterface({ input: process.stdin });
const told = new Promise<void>((resolve) => lines.once("line", () => resolve()));

function client(token: string): { im: ImClient; gateway: () => string | undefined } {
  let gateway: string | undefined;
  const im = new ImClient({ baseUrl: gateways, token, WebSocket: WebSocket as unknown as SocketFactory, backoffBaseMs: 200, backoffCapMs: 2_000 });
  im.on("connected", (c) => {
    gateway = c.gateway;
    say({ event: "connected", gateway: c.gateway });
  });
  im.on("disconnected", (d) => say({ event: "disconnected", code: d.code }));
  return { im, gateway: () => gateway };
}

const alice = client(env("IM_TOKEN_ALICE"));
const bob = client(env("IM_TOKEN_BOB"));
const received: Message[] = [];
bob.im.on("message", (m) => received.push(m));
let bobUnread = -1;
bob.im.on("unread", (u) => {
  if (u.conversation_id === conversation) bobUnread = u.unread;
});

await within("alice connects", 20_000, alice.im.connect());
await within("bob connects", 20_000, bob.im.connect());

const sends: Promise<unknown>[] = [];
for (let n = 0; n < 5; n++) sends.push(alice.im.send(conversation, { text: `before ${n}` }, { clientMsgId: `sdk-${n}` }));
await within("the first acks", 30_000, Promise.all(sends));
await eventually("bob gets the first five", 20_000, () => received.length >= 5);

// The gateway alice is on dies; she keeps sending.
say({ event: "kill", gateway: alice.gateway() });
await within("the test kills the gateway", 30_000, told);
for (let n = 5; n < 10; n++) sends.push(alice.im.send(conversation, { text: `after ${n}` }, { clientMsgId: `sdk-${n}` }));
const acks = (await within("every ack after the kill", 60_000, Promise.all(sends))) as { seq: number }[];
const seqs = acks.map((a) => a.seq);
if (JSON.stringify(seqs) !== JSON.stringify([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])) fail(`acks ${JSON.stringify(seqs)}`);
await eventually("bob gets all ten", 30_000, () => received.length >= 10);
await new Promise((r) => setTimeout(r, 500));
if (received.length !== 10) fail(`bob was shown ${received.length} messages, not 10`);
// Shown in seq order, each once (a page that fills a gap can come after a
// later push: the app orders by seq).
const texts = [...received].sort((a, b) => a.seq - b.seq).map((m) => String(m.body["text"]));
const expected = [...Array(10).keys()].map((n) => `${n < 5 ? "before" : "after"} ${n}`);
if (JSON.stringify(texts) !== JSON.stringify(expected)) fail(`bob saw ${JSON.stringify(texts)}`);

// Unread: ten, then none once bob reads.
const list = await within("bob's list", 10_000, bob.im.conversations());
const row = list.items.find((i) => i.conversation_id === conversation);
if (row?.unread !== 10) fail(`bob's unread is ${JSON.stringify(row)}`);
const after = await within("bob reads", 10_000, bob.im.read(conversation, 10));
if (after.unread !== 0 || bobUnread !== 0) fail(`after reading: ${JSON.stringify(after)}, last pushed ${bobUnread}`);
const history = await within("history", 10_000, bob.im.history(conversation, { limit: 50 }));
if (history.length !== 10) fail(`history has ${history.length}`);

say({ event: "done", ok: true, alice_gateway: alice.gateway(), bob_cursor: bob.im.sync.cursor, received: received.length });
alice.im.close();
bob.im.close();
lines.close();
process.exit(0);
