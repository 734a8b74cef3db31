// Type declarations for the socket-gateway realtime client (hand-written; the package is plain ESM).
import type { Socket, ManagerOptions, SocketOptions } from 'socket.io-client';

/** Any JSON value (binary attachments such as Buffer/ArrayBuffer are relayed too). */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json } | ArrayBuffer | ArrayBufferView;

export type ConnectionState = 'connecting' | 'connected' | 'disconnected' | 'reconnecting';
export declare const STATES: readonly ConnectionState[];

/** Payload of the 'connection' event. `reason` is socket.io's disconnect reason when there is one. */
export interface ConnectionEvent {
  state: ConnectionState;
  reason?: string;
  /**
   * With state 'connected': true when the gateway recovered the socket (same socket id, channels
   * and subscriptions kept, missed events replayed), false for a new socket (rejoined and
   * re-subscribed by the client).
   */
  recovered?: boolean;
}

/** The contract's error codes, plus the client's own (timeout, disconnected, closed, connect_error). */
export type ErrorCode =
  | 'bad_request' | 'invalid_channel' | 'forbidden' | 'not_found' | 'unknown_subscription'
  | 'too_large' | 'rate_limited' | 'unauthorized' | 'internal'
  | 'timeout' | 'disconnected' | 'closed' | 'connect_error';

/** The reasons a handshake token is refused (error.reason when code is 'unauthorized'). */
export type RefusalReason =
  | 'missing_token' | 'malformed' | 'bad_signature' | 'expired' | 'not_yet_valid'
  | 'wrong_algorithm' | 'wrong_issuer' | 'wrong_audience' | 'missing_claim';

export declare class RealtimeError extends Error {
  constructor(code: ErrorCode | string, message?: string, extra?: Record<string, unknown>);
  readonly name: 'RealtimeError';
  /** The contract's error code, or timeout / disconnected / closed / connect_error. */
  code: ErrorCode | string;
  /** For a refused connection: why the token was refused. */
  reason?: RefusalReason | string;
  /** The failure ack as the server sent it, when there was one. */
  ack?: FailureAck;
  /** For a failed rejoin after a reconnect. */
  channel?: string;
  /** For a failed re-subscribe after a reconnect. */
  topic?: string;
  cause?: unknown;
}

export interface FailureAck { ok: false; error: { code: string; message: string } }

export interface JoinAck { ok: true; channel: string; members: number }
export interface LeaveAck { ok: true; channel: string }
export interface PublishAck { ok: true; id: string }
export interface DirectAck { ok: true; id: string }
export interface UnsubscribeAck { ok: true }
export interface RefreshAck { ok: true; exp: number }

export interface Member {
  socketId: string;
  userId: string;
  info: Json;
  joinedAt: number;
}
export interface MembersAck {
  ok: true;
  channel: string;
  /** Ordered by socket id. */
  members: Member[];
  /** Present while more members remain: pass it as `after` for the next page. */
  next?: string;
}

export interface Sender { socketId: string; userId: string }

/** An event delivered by the gateway (contract §4). */
export interface RealtimeEvent<D = Json> {
  id: string;
  /** null for a direct message */
  channel: string | null;
  event: string;
  data: D;
  /** null for a REST broadcast */
  from: Sender | null;
  /** epoch milliseconds */
  ts: number;
  /** a direct message's target socket id */
  to?: string;
  /** set on deliveries through a subscription */
  subscriptionId?: string;
}

/**
 * A channel's recent events, oldest first, and `offset`: the id of the newest event the channel
 * keeps ('' when none). At most one packet: when the last event is not `offset`, ask again `since`
 * it for the rest.
 */
export interface HistoryAck { ok: true; channel: string; events: RealtimeEvent[]; offset: string }

export interface MembersOptions {
  /** At most this many members (a positive integer; above 1000 means 1000; default 1000). */
  limit?: number;
  /** Only members whose socket id sorts after this one: an earlier answer's `next`. */
  after?: string;
}

export interface HistoryOptions {
  /** At most this many, the newest ones (a positive integer). */
  limit?: number;
  /** Only events after this one: an event id, or an earlier answer's `offset` ('' = all). */
  since?: string;
}

export interface PresenceEvent {
  channel: string;
  type: 'join' | 'leave';
  member: { socketId: string; userId: string; info: Json };
  ts: number;
}

/** Subscription filter (contract §3): every condition must hold. */
export interface Filter {
  event?: string | string[];
  /** dot paths into data → the JSON value they must equal */
  where?: Record<string, Json>;
}

export interface PublishOptions {
  /** false: skip every socket of the publisher's userId */
  echo?: boolean;
}

export type Off = () => void;
export type EventHandler<D = Json> = (event: RealtimeEvent<D>) => void;

export interface RealtimeEvents {
  connection: (e: ConnectionEvent) => void;
  error: (err: RealtimeError | Error) => void;
  /** every delivered event: channel memberships, direct messages and subscription deliveries */
  event: EventHandler;
  /** direct messages */
  direct: EventHandler;
  presence: (p: PresenceEvent) => void;
  /** a successful token refresh; exp in epoch seconds */
  refresh: (r: { exp: number }) => void;
}

export type TokenSource =
  | { token: string; getToken?: undefined }
  | { getToken: () => string | Promise<string>; token?: undefined };

export type RealtimeOptions = TokenSource & Partial<ManagerOptions & SocketOptions> & {
  /** The gateway, e.g. 'http://localhost:3000'. */
  url: string;
  /** How long a request may wait for the connection plus its ack (ms). Default 10000. */
  requestTimeout?: number;
  /**
   * With getToken: send `refresh` this many seconds before the token's exp (at most half of the
   * time left). Default 30. false disables refreshing.
   */
  refreshMarginSeconds?: number | false;
  /** Connect at once (default true); otherwise call connect(). */
  autoConnect?: boolean;
  /**
   * Ask the gateway to keep this socket recoverable across reconnects (default true). false sends
   * `recover: false` with the token: every reconnect is then a new socket.
   */
  recover?: boolean;
};

export declare class Subscription<D = Json> {
  readonly topic: string;
  readonly filter: Filter | undefined;
  readonly handler: EventHandler<D>;
  /** false once unsubscribed */
  readonly active: boolean;
  /** The server's current subscription id: null while offline, the same again after a recovered reconnect, a new one otherwise. */
  readonly id: string | null;
  /** Stop receiving. Resolves with the server's ack (or {ok:true} when offline / already done). */
  unsubscribe(): Promise<UnsubscribeAck>;
}

export declare class SocketClient {
  /** This connection's socket id (undefined while not connected). */
  readonly socketId: string | undefined;
  /** The channels this client is in and rejoins after a reconnect. */
  readonly channels: string[];

  joinChannel(channel: string): Promise<JoinAck>;
  leaveChannel(channel: string): Promise<LeaveAck>;
  publish(channel: string, event: string, data?: Json, opts?: PublishOptions): Promise<PublishAck>;
  directMessage(socketId: string, event: string, data?: Json): Promise<DirectAck>;
  subscribe<D = Json>(topic: string, handler: EventHandler<D>): Promise<Subscription<D>>;
  subscribe<D = Json>(topic: string, filter: Filter | undefined | null, handler: EventHandler<D>): Promise<Subscription<D>>;
  members(channel: string, opts?: MembersOptions): Promise<MembersAck>;
  /** A channel's recent events, oldest first; allowed like joinChannel. */
  history(channel: string, opts?: HistoryOptions): Promise<HistoryAck>;

  /** Membership deliveries on one channel. */
  onChannel<D = Json>(channel: string, handler: EventHandler<D>): Off;
  /** Membership and direct deliveries with this event name. */
  onEvent<D = Json>(name: string, handler: EventHandler<D>): Off;
  /** Direct messages to this socket. */
  onDirect<D = Json>(handler: EventHandler<D>): Off;
  /** Presence on one channel, or on all. */
  onPresence(channel: string, handler: (p: PresenceEvent) => void): Off;
  onPresence(handler: (p: PresenceEvent) => void): Off;

  on<K extends keyof RealtimeEvents>(name: K, handler: RealtimeEvents[K]): Off;
  off<K extends keyof RealtimeEvents>(name: K, handler?: RealtimeEvents[K]): void;
}

export declare class Realtime {
  constructor(options: RealtimeOptions);
  readonly socketClient: SocketClient;
  readonly state: ConnectionState;
  /** True once connected with channels and subscriptions restored. */
  readonly connected: boolean;
  /** True while connected on a socket the gateway recovered after a reconnect. */
  readonly recovered: boolean;
  /** This connection's socket id (undefined while not connected). */
  readonly socketId: string | undefined;
  /** The underlying socket.io-client socket. */
  readonly socket: Socket;

  on<K extends keyof RealtimeEvents>(name: K, handler: RealtimeEvents[K]): Off;
  once<K extends keyof RealtimeEvents>(name: K, handler: RealtimeEvents[K]): Off;
  off<K extends keyof RealtimeEvents>(name: K, handler?: RealtimeEvents[K]): void;

  /** Start connecting (after autoConnect:false or close()). */
  connect(): this;
  /** Resolves once connected (state 'connected'). */
  ready(): Promise<void>;
  /** Disconnect for good; pending requests reject with code 'closed'. */
  close(): void;
}

export declare function createRealtime(options: RealtimeOptions): Realtime;

/** Decode a JWT's payload without verifying it (null when it is not a JWT). */
export declare function decodeJwt(token: string): Record<string, unknown> | null;

export default createRealtime;
