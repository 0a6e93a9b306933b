/**
 * The frames of the gateway's WebSocket protocol (docs/PROTOCOL.md,
 * schemas/asyncapi.yaml). Server frames are checked when they arrive
 * ({@link parseServerFrame}): a frame that lacks what its type promises is
 * reported as a protocol error, never passed on half-formed.
 */

export type MessageKind = "text" | "image" | "file" | "custom";

/** A committed message, as pushed, synced or read from history. */
export interface Message {
  message_id: string;
  conversation_id: string;
  seq: number;
  sender_id: string;
  kind: MessageKind;
  body: Record<string, unknown>;
  sent_at: string;
  mentions?: string[];
  reply_to?: number;
  edited_at?: string;
  recalled_at?: string;
  reactions?: { emoji: string; users: string[] }[];
  /** Present once the message is in this user's sync log. */
  sync_seq?: number;
}

export interface SendFrame {
  op: "send";
  conversation_id: string;
  client_msg_id: string;
  kind: MessageKind;
  body: Record<string, unknown>;
  mentions?: string[];
  reply_to?: number;
}

export type ClientFrame =
  | SendFrame
  | { op: "sync"; after: number; limit?: number }
  | { op: "history"; conversation_id: string; before_seq?: number; limit?: number }
  | { op: "read"; conversation_id: string; seq: number }
  | { op: "conversations" }
  | { op: "ping" }
  | { op: "auth"; token: string }
  | { op: "delivered"; sync_seq: number }
  | { op: "typing"; conversation_id: string }
  | { op: "edit"; conversation_id: string; seq: number; body: Record<string, unknown> }
  | { op: "recall"; conversation_id: string; seq: number }
  | { op: "react" | "unreact"; conversation_id: string; seq: number; emoji: string }
  | { op: "receipts"; conversation_id: string }
  | { op: "presence" | "presence_subscribe" | "presence_unsubscribe"; users: string[] }
  | { op: "block" | "unblock"; user_id: string }
  | { op: "mute"; conversation_id: string; until: string | null }
  | { op: "register_push"; provider: "apns" | "fcm" | "hms" | "xiaomi" | "webhook"; token: string }
  | { op: "unregister_push" };

/** Every op a client sends (schemas/asyncapi.yaml's client messages). */
export const CLIENT_OPS = [
  "send", "sync", "history", "read", "conversations", "ping", "edit", "recall", "typing", "delivered",
  "register_push", "unregister_push", "auth", "mute", "react", "unreact", "block", "unblock", "receipts",
  "presence", "presence_subscribe", "presence_unsubscribe",
] as const;

// The list and the frame type name the same ops (a compile error otherwise).
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const _clientOpsMatch: Same<ClientFrame["op"], (typeof CLIENT_OPS)[number]> = true;
void _clientOpsMatch;

/** One item of the user's sync log. */
export type SyncItem =
  | ({ type: "message"; sync_seq: number } & Message)
  | { type: "edit" | "recall" | "read" | "reaction"; sync_seq: number; conversation_id: string; seq?: number; [field: string]: unknown };

export interface ConversationRow {
  conversation_id: string;
  last_seq: number;
  read_seq: number;
  unread: number;
  muted_until?: string | null;
  last_message?: Record<string, unknown> | null;
}

export interface Unread {
  conversation_id: string;
  unread: number;
  total: number;
  as_of?: number;
}

export interface ErrorFrame {
  op: "error";
  code: string;
  message: string;
  client_msg_id?: string;
}

/** Server frames by op, with the fields the SDK relies on. */
export type ServerFrame =
  | { op: "ack"; client_msg_id: string; message_id: string; conversation_id: string; seq: number }
  | ({ op: "message" } & Message)
  | { op: "sync_result"; items: SyncItem[]; next: number; has_more: boolean; resync?: boolean; message?: string }
  | { op: "history_result"; conversation_id: string; messages: Message[]; truncated?: boolean }
  | ({ op: "unread" } & Unread)
  | { op: "conversations_result"; items: ConversationRow[]; total_unread: number }
  | { op: "pong" }
  | { op: "authenticated"; exp: number }
  | { op: "read"; conversation_id: string; seq: number; sync_seq?: number }
  | { op: "typing"; conversation_id: string; user_id: string }
  | { op: "edited" | "recalled" | "reacted" | "receipt" | "presence" | "muted" | "blocked" | "unblocked"; [field: string]: unknown }
  | { op: "receipts_result" | "presence_result" | "presence_unsubscribed" | "push_registered" | "push_unregistered"; [field: string]: unknown }
  | ErrorFrame;

const _serverOpsMatch: Same<ServerFrame["op"], (typeof SERVER_OPS)[number]> = true;
void _serverOpsMatch;

type FieldType = "string" | "number" | "boolean" | "object";

/** What each op must carry (beyond `op`). */
export const REQUIRED: Record<string, [string, FieldType][]> = {
  ack: [["client_msg_id", "string"], ["message_id", "string"], ["conversation_id", "string"], ["seq", "number"]],
  message: [["message_id", "string"], ["conversation_id", "string"], ["seq", "number"], ["sender_id", "string"]],
  sync_result: [["items", "object"], ["next", "number"], ["has_more", "boolean"]],
  history_result: [["conversation_id", "string"], ["messages", "object"]],
  unread: [["conversation_id", "string"], ["unread", "number"], ["total", "number"]],
  conversations_result: [["items", "object"], ["total_unread", "number"]],
  authenticated: [["exp", "number"]],
  read: [["conversation_id", "string"], ["seq", "number"]],
  typing: [["conversation_id", "string"], ["user_id", "string"]],
  error: [["code", "string"], ["message", "string"]],
};

/** Every op the server sends (schemas/asyncapi.yaml's server messages). */
export const SERVER_OPS = [
  "ack", "message", "sync_result", "history_result", "unread", "conversations_result", "pong",
  "edited", "recalled", "read", "typing", "push_registered", "push_unregistered", "authenticated",
  "muted", "reacted", "receipt", "receipts_result", "presence_result", "presence",
  "presence_unsubscribed", "blocked", "unblocked", "error",
] as const;

/** Parse a text frame from the server, or say why it is not one. */
export function parseServerFrame(text: string): ServerFrame | { invalid: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { invalid: `not JSON: ${text.slice(0, 80)}` };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { invalid: "not a JSON object" };
  }
  const frame = value as Record<string, unknown>;
  const op = frame["op"];
  if (typeof op !== "string" || !(SERVER_OPS as readonly string[]).includes(op)) {
    return { invalid: `unknown op ${JSON.stringify(op)}` };
  }
  for (const [field, type] of REQUIRED[op] ?? []) {
    const actual = frame[field];
    if (typeof actual !== type || actual === null) {
      return { invalid: `${op} without ${type} ${field}` };
    }
  }
  return frame as unknown as ServerFrame;
}
