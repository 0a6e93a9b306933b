/**
 * The browser chat served at /app/: the SDK's ImClient behind a small DOM
 * view. Sign in by name (development tokens, `imctl up`) or with a pasted
 * token; a conversation list with unread badges; a conversation with
 * history paging, send, typing, receipts, presence, edit, recall and
 * reactions. The page keeps no state the SDK does not: every message is
 * drawn once, by message_id, in seq order.
 */

import { ImClient, ServerError } from "../src/index.js";
import type { ConversationRow, Message } from "../src/index.js";

const $ = <T extends HTMLElement>(id: string): T => {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`#${id} is missing from index.html`);
  return found as T;
};

const origin = window.location.origin;
let client: ImClient | undefined;
let me = "";
let open: string | undefined;
const rows = new Map<string, ConversationRow>();
const drawn = new Map<string, Map<string, Message>>();

function peerOf(conversation: string): string | undefined {
  const parts = conversation.split(":");
  return parts.length === 3 && parts[0] === "dm" ? parts.find((p, i) => i > 0 && p !== me) ?? me : undefined;
}

function directId(a: string, b: string): string {
  return a <= b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}

function say(error: unknown): void {
  const message = error instanceof ServerError ? `${error.code}: ${error.message}` : String(error);
  $("status").textContent = message;
}

async function signIn(token: string, user: string): Promise<void> {
  me = user;
  $("me").textContent = user;
  $("login").hidden = true;
  $("chat").hidden = false;
  const im = new ImClient({ baseUrl: origin, token });
  client = im;
  im.on("connected", (c) => {
    document.body.dataset["gateway"] = c.gateway ?? "";
    $("status").textContent = "online";
    void refreshList();
  });
  im.on("disconnected", () => {
    $("status").textContent = "reconnecting…";
  });
  im.on("message", (m) => onMessage(m));
  im.on("unread", (u) => {
    const row = rows.get(u.conversation_id);
    if (row !== undefined) {
      row.unread = u.unread;
      drawList();
    }
  });
  im.on("typing", (t) => {
    if (t.conversation_id !== open || t.user_id === me) return;
    $("typing").textContent = `${t.user_id} is typing…`;
    setTimeout(() => ($("typing").textContent = ""), 3000);
  });
  im.on("edited", () => void reloadOpen());
  im.on("recalled", () => void reloadOpen());
  im.on("reacted", () => void reloadOpen());
  im.on("receipt", () => void drawReceipts());
  im.on("presence", (p) => drawPresence(p as { user_id?: string; online?: boolean }));
  im.on("error", (e) => console.warn(e));
  await im.connect();
}

async function refreshList(): Promise<void> {
  if (client === undefined) return;
  try {
    const list = await client.conversations();
    for (const row of list.items) rows.set(row.conversation_id, row);
    drawList();
  } catch (error) {
    say(error);
  }
}

function drawList(): void {
  const list = $("conversations");
  list.replaceChildren(
    ...[...rows.values()]
      .sort((a, b) => a.conversation_id.localeCompare(b.conversation_id))
      .map((row) => {
        const item = document.createElement("li");
        item.dataset["conversation"] = row.conversation_id;
        item.classList.toggle("open", row.conversation_id === open);
        const name = document.createElement("div");
        const title = document.createElement("div");
        title.textContent = peerOf(row.conversation_id) ?? row.conversation_id;
        const preview = document.createElement("div");
        preview.className = "preview";
        const last = row.last_message as { body?: { text?: string } } | null | undefined;
        preview.textContent = last?.body?.text ?? "";
        name.append(title, preview);
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = row.unread > 0 && row.conversation_id !== open ? String(row.unread) : "";
        item.append(name, badge);
        item.onclick = () => void openConversation(row.conversation_id);
        return item;
      }),
  );
}

function onMessage(message: Message): void {
  const row = rows.get(message.conversation_id);
  if (row === undefined) {
    rows.set(message.conversation_id, { conversation_id: message.conversation_id, last_seq: message.seq, read_seq: 0, unread: message.sender_id === me ? 0 : 1, last_message: message as unknown as Record<string, unknown> });
  } else {
    row.last_seq = Math.max(row.last_seq, message.seq);
    row.last_message = message as unknown as Record<string, unknown>;
  }
  if (message.conversation_id === open) {
    remember(message);
    drawMessages();
    void markRead(message.conversation_id, message.seq);
  }
  drawList();
}

function remember(message: Message): void {
  let messages = drawn.get(message.conversation_id);
  if (messages === undefined) {
    messages = new Map();
    drawn.set(message.conversation_id, messages);
  }
  messages.set(message.message_id, message);
}

async function markRead(conversation: string, seq: number): Promise<void> {
  const row = rows.get(conversation);
  if (client === undefined || (row !== undefined && row.read_seq >= seq)) return;
  try {
    const unread = await client.read(conversation, seq);
    if (row !== undefined) {
      row.read_seq = seq;
      row.unread = unread.unread;
    }
    drawList();
  } catch (error) {
    if (!(error instanceof ServerError && error.code === "read_beyond_last_seq")) say(error);
  }
}

async function openConversation(conversation: string): Promise<void> {
  open = conversation;
  $("title").textContent = peerOf(conversation) ?? conversation;
  $("composer").hidden = false;
  $("typing").textContent = "";
  $("presence").textContent = "";
  drawn.set(conversation, new Map());
  drawList();
  await reloadOpen();
  const peer = peerOf(conversation);
  if (client !== undefined && peer !== undefined && peer !== me) {
    try {
      const answer = (await client.presence([peer], true)) as { users?: { user_id: string; online: boolean }[] };
      for (const user of answer.users ?? []) drawPresence(user);
    } catch {
      // A stranger (no message yet) has no presence to show.
    }
  }
}

async function reloadOpen(before?: number): Promise<void> {
  const conversation = open;
  if (client === undefined || conversation === undefined) return;
  try {
    const page = await client.history(conversation, { limit: 30, ...(before !== undefined ? { beforeSeq: before } : {}) });
    for (const message of page) remember(message);
    $("older").hidden = page.length < 30;
    drawMessages();
    const last = page.at(-1);
    const row = rows.get(conversation);
    if (last !== undefined && row !== undefined && last.seq >= row.last_seq) {
      row.last_seq = last.seq;
      row.last_message = last as unknown as Record<string, unknown>;
      drawList();
    }
    if (last !== undefined && before === undefined) await markRead(conversation, last.seq);
    await drawReceipts();
  } catch (error) {
    if (error instanceof ServerError && error.code === "not_member") return;
    say(error);
  }
}

function drawMessages(): void {
  const messages = [...(drawn.get(open ?? "")?.values() ?? [])].sort((a, b) => a.seq - b.seq);
  $("messages").replaceChildren(
    ...messages.map((m) => {
      const item = document.createElement("li");
      item.dataset["messageId"] = m.message_id;
      item.dataset["seq"] = String(m.seq);
      item.classList.toggle("mine", m.sender_id === me);
      item.classList.toggle("recalled", m.recalled_at !== undefined && m.recalled_at !== null);
      const sender = document.createElement("span");
      sender.className = "sender";
      sender.textContent = m.sender_id;
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = m.recalled_at ? "(recalled)" : String(m.body["text"] ?? JSON.stringify(m.body));
      const meta = document.createElement("span");
      meta.className = "meta";
      meta.textContent = m.edited_at ? "edited" : "";
      const reactions = document.createElement("span");
      reactions.className = "reactions";
      reactions.textContent = (m.reactions ?? []).map((r) => `${r.emoji} ${r.users.length}`).join(" ");
      const actions = document.createElement("span");
      actions.className = "actions";
      const button = (label: string, run: () => Promise<unknown>) => {
        const b = document.createElement("button");
        b.textContent = label;
        b.onclick = () => void run().catch(say);
        actions.append(b);
      };
      if (client !== undefined && !m.recalled_at) {
        const im = client;
        button("👍", () => im.react(m.conversation_id, m.seq, "👍"));
        if (m.sender_id === me) {
          button("edit", async () => {
            const body = window.prompt("New text", String(m.body["text"] ?? ""));
            if (body !== null) await im.edit(m.conversation_id, m.seq, { text: body });
          });
          button("recall", () => im.recall(m.conversation_id, m.seq));
        }
      }
      item.append(sender, text, meta, reactions, actions);
      return item;
    }),
  );
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

async function drawReceipts(): Promise<void> {
  const conversation = open;
  if (client === undefined || conversation === undefined) return;
  try {
    const answer = (await client.receipts(conversation)) as { members?: { user_id: string; read_seq: number; delivered_seq: number }[] };
    const mine = [...(drawn.get(conversation)?.values() ?? [])].filter((m) => m.sender_id === me).map((m) => m.seq);
    const last = Math.max(0, ...mine);
    const others = (answer.members ?? []).filter((r) => r.user_id !== me);
    $("receipts").textContent =
      last === 0 ? "" : others.map((r) => `${r.user_id}: ${r.read_seq >= last ? "read" : r.delivered_seq >= last ? "delivered" : "sent"}`).join(", ");
  } catch {
    $("receipts").textContent = "";
  }
}

function drawPresence(user: { user_id?: string; online?: boolean }): void {
  if (open === undefined || user.user_id !== peerOf(open)) return;
  const presence = $("presence");
  presence.classList.toggle("online", user.online === true);
  presence.textContent = user.online === true ? "online" : "offline";
}

$("login-name").onsubmit = async (event) => {
  event.preventDefault();
  const user = $<HTMLInputElement>("user").value.trim();
  try {
    const answer = await fetch(`${origin}/v1/dev/token`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ user, device: "web" }) });
    const body = (await answer.json()) as { token?: string; message?: string };
    if (!answer.ok || body.token === undefined) throw new Error(body.message ?? `sign-in refused (${answer.status})`);
    await signIn(body.token, user);
  } catch (error) {
    $("login-error").textContent = String(error instanceof Error ? error.message : error);
  }
};

$("login-token").onsubmit = async (event) => {
  event.preventDefault();
  const token = $<HTMLTextAreaElement>("token").value.trim();
  try {
    const payload = JSON.parse(atob((token.split(".")[1] ?? "").replace(/-/g, "+").replace(/_/g, "/"))) as { sub?: string };
    await signIn(token, payload.sub ?? "");
  } catch {
    $("login-error").textContent = "that is not a token (a JWT: three parts separated by dots)";
  }
};

$("new-chat").onsubmit = (event) => {
  event.preventDefault();
  const peer = $<HTMLInputElement>("peer").value.trim();
  if (peer === "" || peer === me) return;
  const conversation = directId(me, peer);
  if (!rows.has(conversation)) rows.set(conversation, { conversation_id: conversation, last_seq: 0, read_seq: 0, unread: 0 });
  void openConversation(conversation);
};

$("composer").onsubmit = (event) => {
  event.preventDefault();
  const input = $<HTMLInputElement>("text");
  const text = input.value;
  if (client === undefined || open === undefined || text.trim() === "") return;
  input.value = "";
  const conversation = open;
  client
    .send(conversation, { text })
    .then(() => (conversation === open ? reloadOpen() : undefined))
    .catch(say);
};

// At most one typing frame every 3 s: it counts against the write budget.
let typedAt = 0;
$("text").oninput = () => {
  if (client === undefined || open === undefined || Date.now() - typedAt < 3000) return;
  typedAt = Date.now();
  client.typing(open);
};

$("older").onclick = () => {
  const first = [...(drawn.get(open ?? "")?.values() ?? [])].reduce((min, m) => Math.min(min, m.seq), Infinity);
  if (Number.isFinite(first)) void reloadOpen(first);
};
