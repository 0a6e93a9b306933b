export { ImClient, ServerError } from "./client.js";
export type { Ack, ClientEvents, ClientOptions, SendOptions, SocketFactory, SocketLike } from "./client.js";
export { SyncState, backoffMs, tokenExpiry } from "./sync.js";
export type { SyncAction } from "./sync.js";
export { parseServerFrame, SERVER_OPS } from "./frames.js";
export type { ClientFrame, ConversationRow, ErrorFrame, Message, MessageKind, SendFrame, ServerFrame, SyncItem, Unread } from "./frames.js";
