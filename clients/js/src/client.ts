/**
 * The I/O shell around {@link SyncState}: one WebSocket session at a time,
 * found through `GET /v1/connect`, reconnected with backoff and jitter;
 * sends kept until acked and resent with the same `client_msg_id` on every
 * new session (a resend gets the same ack, never a second message); the
 * sync cursor advanced only over what arrived without a gap; the token
 * refreshed with the `auth` frame before it expires.
 *
 * Works in browsers and in Node.js (pass `WebSocket` from the `ws` package
 * on Node 20, which has no global one).
 */

import { parseServerFrame } from "./frames.js";
import type { ClientFrame, ConversationRow, ErrorFrame, Message, MessageKind, ServerFrame, SyncItem, Unread } from "./frames.js";
import { SyncState, backoffMs, tokenExpiry } from "./sync.js";
import type { SyncAction } from "./sync.js";

/** The part of the WebSocket API the client uses (browser or `ws`). */
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
}
export type SocketFactory = new (url: string) => SocketLike;

export interface ClientOptions {
  /** Gateways' HTTP addresses, e.g. `http://127.0.0.1:8080`: any one
   * answers `/v1/connect`; when one does not, the next is asked. */
  baseUrl: string | string[];
  /** The token, or a function that returns a fresh one (called for every
   * new session and before the current token expires). */
  token: string | (() => string | Promise<string>);
  /** Defaults to `globalThis.WebSocket`. */
  WebSocket?: SocketFactory;
  /** Defaults to `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** A sync cursor kept from an earlier run (default 0: everything). */
  cursor?: number;
  pingIntervalMs?: number;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  random?: () => number;
}

export interface Ack {
  client_msg_id: string;
  message_id: string;
  conversation_id: string;
  seq: number;
}

export interface SendOptions {
  kind?: MessageKind;
  clientMsgId?: string;
  replyTo?: number;
  mentions?: string[];
}

/** An error the server answered a request with. */
export class ServerError extends Error {
  constructor(readonly code: string, message: string) {
    super(`${code}: ${message}`);
  }
}

/** Codes after which a send is kept and resent with the same id. */
const RETRYABLE = new Set(["unavailable", "storage_full", "rate_limited"]);

export interface ClientEvents {
  connected: { gateway: string | undefined };
  disconnected: { code: number; reason: string };
  message: Message;
  change: SyncItem;
  edited: Record<string, unknown>;
  recalled: Record<string, unknown>;
  reacted: Record<string, unknown>;
  read: { conversation_id: string; seq: number };
  unread: Unread;
  typing: { conversation_id: string; user_id: string };
  receipt: Record<string, unknown>;
  presence: Record<string, unknown>;
  resync: { next: number };
  error: Error;
}
type Listener<T> = (value: T) => void;

interface PendingSend {
  frame: ClientFrame & { op: "send" };
  resolve: (ack: Ack) => void;
  reject: (error: Error) => void;
}

interface PendingRequest {
  answer: string;
  resolve: (frame: ServerFrame) => void;
  reject: (error: Error) => void;
}

const OPEN = 1;

export class ImClient {
  readonly sync: SyncState;
  private socket: SocketLike | undefined;
  private readonly sends = new Map<string, PendingSend>();
  private requests: PendingRequest[] = [];
  private readonly listeners = new Map<keyof ClientEvents, Set<Listener<never>>>();
  private readonly unreadAsOf = new Map<string, number>();
  /** Every gateway the last `/v1/connect` answer named (the one chosen
   * and its alternatives): where to go when no gateway answers
   * `/v1/connect` any more. */
  private alternatives: { url: string; gateway: string | undefined }[] = [];
  /** A URL whose socket closed before it ever opened (a gateway that is
   * gone but still registered, for up to its registration TTL). */
  private unreachable: string | undefined;
  /** The URL of the session that just closed: the next one goes elsewhere
   * while another gateway is live (the one that died may be back at once,
   * empty and so the least loaded, or still registered though gone). */
  private lost: string | undefined;
  private attempt = 0;
  private closed = false;
  private timers: ReturnType<typeof setTimeout>[] = [];
  private ping: ReturnType<typeof setInterval> | undefined;
  private counter = 0;
  private readonly WebSocketImpl: SocketFactory;
  private readonly fetchImpl: typeof fetch;

  constructor(private readonly options: ClientOptions) {
    this.sync = new SyncState(options.cursor ?? 0);
    const ws = options.WebSocket ?? (globalThis as { WebSocket?: SocketFactory }).WebSocket;
    if (ws === undefined) throw new Error("no WebSocket: pass options.WebSocket (on Node 20: `import WebSocket from \"ws\"`)");
    this.WebSocketImpl = ws;
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  on<E extends keyof ClientEvents>(event: E, listener: Listener<ClientEvents[E]>): () => void {
    let set = this.listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as Listener<never>);
    return () => set.delete(listener as Listener<never>);
  }

  private emit<E extends keyof ClientEvents>(event: E, value: ClientEvents[E]): void {
    for (const listener of this.listeners.get(event) ?? []) (listener as Listener<ClientEvents[E]>)(value);
  }

  /** Open a session (and keep one open until {@link close}); resolves once
   * the first one is open. */
  connect(): Promise<void> {
    this.closed = false;
    return new Promise((resolve) => {
      const off = this.on("connected", () => {
        off();
        resolve();
      });
      void this.open();
    });
  }

  /** End the session for good: pending requests fail, unacked sends too. */
  close(): void {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    if (this.ping !== undefined) clearInterval(this.ping);
    this.socket?.close(1000, "closed by the client");
    this.failRequests(new Error("the client was closed"));
    for (const [id, send] of this.sends) {
      send.reject(new Error(`the client was closed before ${id} was acked`));
    }
    this.sends.clear();
  }

  get connected(): boolean {
    return this.socket?.readyState === OPEN;
  }

  private async token(): Promise<string> {
    const token = this.options.token;
    return typeof token === "string" ? token : await token();
  }

  private later(ms: number, run: () => void): void {
    const timer = setTimeout(() => {
      this.timers = this.timers.filter((t) => t !== timer);
      run();
    }, ms);
    this.timers.push(timer);
  }

  private async open(): Promise<void> {
    if (this.closed) return;
    let token: string;
    let url: string;
    let gateway: string | undefined;
    try {
      token = await this.token();
    } catch (error) {
      this.emit("error", error instanceof Error ? error : new Error(String(error)));
      this.retry();
      return;
    }
    const found = await this.locate(token);
    if (found === undefined) {
      this.retry();
      return;
    }
    ({ url, gateway } = found);
    if (this.closed) return;
    const socket = new this.WebSocketImpl(`${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`);
    this.socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.unreachable = undefined;
      this.lost = undefined;
      this.attempt = 0;
      this.startPing();
      this.scheduleRefresh(token);
      this.watchAlternatives(token);
      this.emit("connected", { gateway });
      // Everything not acked goes again, with its own id, in order.
      for (const send of this.sends.values()) this.write(send.frame);
      this.run(this.sync.connected());
    };
    socket.onmessage = (event) => {
      if (typeof event.data === "string") this.receive(event.data);
      else this.emit("error", new Error("protocol: a binary frame (the gateway sends text frames only)"));
    };
    socket.onerror = () => {};
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      if (opened) this.lost = url;
      else this.unreachable = url;
      if (this.ping !== undefined) clearInterval(this.ping);
      this.sync.disconnected();
      this.failRequests(new Error(`disconnected (${event.code} ${event.reason}); ask again`));
      this.emit("disconnected", { code: event.code, reason: event.reason });
      this.retry();
    };
  }

  /** While a session is open, keep the list of other gateways fresh (it
   * is what a client falls back on when the gateway it asks dies): soon
   * while it is empty (gateways starting together see each other within
   * seconds), then every few minutes. */
  private watchAlternatives(token: string, round = 0): void {
    const wait = this.alternatives.length <= 1 ? Math.min(60_000, 2_000 * 2 ** round) : 300_000;
    this.later(wait, () => {
      if (this.closed || !this.connected) return;
      void this.ask(token).then(() => this.watchAlternatives(token, round + 1));
    });
  }

  /** `/v1/connect` of each base in turn: the first answer, or undefined. */
  private async ask(token: string): Promise<{ url: string; gateway: string | undefined } | undefined> {
    const bases = typeof this.options.baseUrl === "string" ? [this.options.baseUrl] : this.options.baseUrl;
    for (let i = 0; i < bases.length; i++) {
      const base = bases[(this.attempt + i) % bases.length] ?? "";
      try {
        const answer = await this.fetchImpl(`${base}/v1/connect`, { headers: { authorization: `Bearer ${token}` } });
        const body = (await answer.json()) as { url?: string; gateway?: string; alternatives?: { url?: unknown; gateway?: unknown }[]; code?: string; message?: string };
        if (answer.ok && body.url !== undefined) {
          this.alternatives = [
            { url: body.url, gateway: body.gateway },
            ...(body.alternatives ?? []).flatMap((a) =>
              typeof a.url === "string" && typeof a.gateway === "string" ? [{ url: a.url, gateway: a.gateway }] : [],
            ),
          ];
          return { url: body.url, gateway: body.gateway };
        }
        this.emit("error", new ServerError(body.code ?? String(answer.status), body.message ?? "no gateway to connect to"));
      } catch (error) {
        this.emit("error", error instanceof Error ? error : new Error(String(error)));
      }
    }
    return undefined;
  }

  /** Where to open the next session: the gateway `/v1/connect` names
   * (each base asked in turn), else, when none answers, one of the
   * alternatives the last answer named. */
  private async locate(token: string): Promise<{ url: string; gateway: string | undefined } | undefined> {
    const chosen = await this.ask(token);
    const avoid = (url: string) => url === this.unreachable || url === this.lost;
    const elsewhere = this.alternatives.filter((a) => !avoid(a.url));
    if (chosen !== undefined && (!avoid(chosen.url) || elsewhere.length === 0)) return chosen;
    const from = elsewhere.length > 0 ? elsewhere : this.alternatives;
    return from[this.attempt % Math.max(1, from.length)] ?? chosen;
  }

  private retry(): void {
    if (this.closed) return;
    const wait = backoffMs(this.attempt++, this.options.backoffBaseMs, this.options.backoffCapMs, this.options.random);
    this.later(wait, () => void this.open());
  }

  private startPing(): void {
    if (this.ping !== undefined) clearInterval(this.ping);
    this.ping = setInterval(() => this.write({ op: "ping" }), this.options.pingIntervalMs ?? 30_000);
  }

  /** A minute before the token expires, hand the session a fresh one. */
  private scheduleRefresh(token: string): void {
    const exp = tokenExpiry(token);
    if (exp === undefined || typeof this.options.token === "string") return;
    const wait = Math.max(1_000, exp * 1000 - Date.now() - 60_000);
    this.later(wait, () => {
      void this.token().then(
        (fresh) => {
          this.write({ op: "auth", token: fresh });
          this.scheduleRefresh(fresh);
        },
        (error: unknown) => this.emit("error", error instanceof Error ? error : new Error(String(error))),
      );
    });
  }

  private write(frame: ClientFrame): boolean {
    const socket = this.socket;
    if (socket === undefined || socket.readyState !== OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  private run(actions: SyncAction[]): void {
    for (const action of actions) {
      switch (action.kind) {
        case "show":
          this.emit("message", action.message);
          break;
        case "change":
          this.emit("change", action.item);
          break;
        case "sync":
          this.write({ op: "sync", after: action.after, limit: 100 });
          break;
        case "resync":
          this.emit("resync", { next: action.next });
          this.write({ op: "sync", after: action.next, limit: 100 });
          break;
        case "delivered":
          this.write({ op: "delivered", sync_seq: action.syncSeq });
          break;
      }
    }
  }

  private receive(text: string): void {
    const frame = parseServerFrame(text);
    if ("invalid" in frame) {
      this.emit("error", new Error(`protocol: ${frame.invalid}`));
      return;
    }
    switch (frame.op) {
      case "ack": {
        const send = this.sends.get(frame.client_msg_id);
        this.sends.delete(frame.client_msg_id);
        send?.resolve({ client_msg_id: frame.client_msg_id, message_id: frame.message_id, conversation_id: frame.conversation_id, seq: frame.seq });
        return;
      }
      case "message": {
        const { op: _op, ...message } = frame;
        this.run(this.sync.message(message));
        return;
      }
      case "sync_result":
        this.run(this.sync.page(frame.items, frame.next, frame.has_more, frame.resync === true));
        return;
      case "unread": {
        const { op: _op, ...unread } = frame;
        // Keep the freshest counts: a lagging push never undoes a read.
        const asOf = unread.as_of ?? 0;
        if (asOf >= (this.unreadAsOf.get(unread.conversation_id) ?? 0)) {
          this.unreadAsOf.set(unread.conversation_id, asOf);
          this.emit("unread", unread);
        }
        this.answer(frame);
        return;
      }
      case "read":
        if (frame.sync_seq !== undefined) this.run(this.sync.positioned(frame.sync_seq));
        this.emit("read", { conversation_id: frame.conversation_id, seq: frame.seq });
        return;
      case "typing":
        this.emit("typing", { conversation_id: frame.conversation_id, user_id: frame.user_id });
        return;
      case "edited":
      case "recalled":
      case "reacted":
      case "receipt":
      case "presence":
        this.emit(frame.op, frame);
        return;
      case "error":
        this.failed(frame);
        return;
      default:
        this.answer(frame);
    }
  }

  private failed(frame: ErrorFrame): void {
    const error = new ServerError(frame.code, frame.message);
    if (frame.client_msg_id !== undefined) {
      const send = this.sends.get(frame.client_msg_id);
      if (send !== undefined) {
        if (RETRYABLE.has(frame.code)) {
          // Kept: resent after a pause, with the same id.
          this.later(backoffMs(1, this.options.backoffBaseMs, this.options.backoffCapMs, this.options.random), () => {
            if (this.sends.has(frame.client_msg_id ?? "")) this.write(send.frame);
          });
        } else {
          this.sends.delete(frame.client_msg_id);
          send.reject(error);
        }
        return;
      }
    }
    // The answer to the oldest request still waiting.
    const request = this.requests.shift();
    if (request !== undefined) request.reject(error);
    else this.emit("error", error);
  }

  private answer(frame: ServerFrame): void {
    const index = this.requests.findIndex((r) => r.answer === frame.op);
    if (index < 0) return;
    const [request] = this.requests.splice(index, 1);
    request?.resolve(frame);
  }

  private failRequests(error: Error): void {
    const requests = this.requests;
    this.requests = [];
    for (const request of requests) request.reject(error);
  }

  private request<T extends ServerFrame>(frame: ClientFrame, answer: T["op"]): Promise<T> {
    return new Promise((resolve, reject) => {
      if (!this.write(frame)) {
        reject(new Error("not connected; ask again once connected"));
        return;
      }
      this.requests.push({ answer, resolve: resolve as (frame: ServerFrame) => void, reject });
    });
  }

  /** Send a message; resolves with its ack once it is durable. Kept and
   * resent with the same id across reconnects until then. */
  send(conversationId: string, body: Record<string, unknown>, options: SendOptions = {}): Promise<Ack> {
    const clientMsgId = options.clientMsgId ?? `c-${Date.now().toString(36)}-${(this.counter++).toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    const frame: ClientFrame & { op: "send" } = {
      op: "send",
      conversation_id: conversationId,
      client_msg_id: clientMsgId,
      kind: options.kind ?? "text",
      body,
      ...(options.replyTo !== undefined ? { reply_to: options.replyTo } : {}),
      ...(options.mentions !== undefined ? { mentions: options.mentions } : {}),
    };
    return new Promise((resolve, reject) => {
      this.sends.set(clientMsgId, { frame, resolve, reject });
      this.write(frame);
    });
  }

  /** Messages still waiting for their ack (resent on reconnect). */
  get unacked(): string[] {
    return [...this.sends.keys()];
  }

  async conversations(): Promise<{ items: ConversationRow[]; total_unread: number }> {
    const result = await this.request<Extract<ServerFrame, { op: "conversations_result" }>>({ op: "conversations" }, "conversations_result");
    return { items: result.items, total_unread: result.total_unread };
  }

  async history(conversationId: string, options: { beforeSeq?: number; limit?: number } = {}): Promise<Message[]> {
    const frame: ClientFrame = {
      op: "history",
      conversation_id: conversationId,
      ...(options.beforeSeq !== undefined ? { before_seq: options.beforeSeq } : {}),
      ...(options.limit !== undefined ? { limit: options.limit } : {}),
    };
    const result = await this.request<Extract<ServerFrame, { op: "history_result" }>>(frame, "history_result");
    return result.messages;
  }

  /** Mark a conversation read up to `seq`; resolves with the new counts. */
  async read(conversationId: string, seq: number): Promise<Unread> {
    const result = await this.request<Extract<ServerFrame, { op: "unread" }>>({ op: "read", conversation_id: conversationId, seq }, "unread");
    const { op: _op, ...unread } = result;
    return unread;
  }

  typing(conversationId: string): void {
    this.write({ op: "typing", conversation_id: conversationId });
  }

  edit(conversationId: string, seq: number, body: Record<string, unknown>): Promise<ServerFrame> {
    return this.request({ op: "edit", conversation_id: conversationId, seq, body }, "edited");
  }

  recall(conversationId: string, seq: number): Promise<ServerFrame> {
    return this.request({ op: "recall", conversation_id: conversationId, seq }, "recalled");
  }

  react(conversationId: string, seq: number, emoji: string, remove = false): Promise<ServerFrame> {
    return this.request({ op: remove ? "unreact" : "react", conversation_id: conversationId, seq, emoji }, "reacted");
  }

  receipts(conversationId: string): Promise<ServerFrame> {
    return this.request({ op: "receipts", conversation_id: conversationId }, "receipts_result");
  }

  presence(users: string[], subscribe = false): Promise<ServerFrame> {
    return this.request({ op: subscribe ? "presence_subscribe" : "presence", users }, "presence_result");
  }
}
