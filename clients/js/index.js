// The realtime client for socket-gateway (its protocol: docs/protocol.md), on socket.io-client 4.x.
//
//   const realtime = createRealtime({ url, getToken });
//   realtime.on('connection', ({ state }) => ...);
//   await realtime.socketClient.joinChannel('chat:room1');
//
// Every request resolves with the gateway's ack ({ ok: true, ... }) or rejects with a
// RealtimeError whose `code` is the protocol's error code (bad_request, invalid_channel, forbidden,
// not_found, unknown_subscription, too_large, rate_limited, unauthorized, internal) or one of the
// client's own: timeout, disconnected, closed. A request whose promise nobody awaits (as in
// `realtime.socketClient.publish(...)` written as a statement) reports its failure on 'error'
// instead, so an ignored call can never end the process with an unhandled rejection.
//
// Across reconnects the gateway normally recovers the socket (socket.io-client sends the recovery
// id and the last offset it saw; the gateway answers with the same socket id and replays what was
// missed): then nothing is redone. When the gateway starts a new socket instead, the client rejoins
// the channels it is in and re-subscribes its subscriptions (the server hands out new subscription
// ids; the Subscription handles keep working). With `getToken`, a fresh token is asked for before
// every connect and sent with `refresh` before the current one expires.
//
// One file of about 630 lines because the client is published as is, with no build step.
import { io } from 'socket.io-client';

/** The connection states, in the order a session goes through them. */
export const STATES = Object.freeze(['connecting', 'connected', 'reconnecting', 'disconnected']);

// How many recent deliveries are remembered to drop a replayed duplicate. The gateway gives an
// event twice only around the moment the connection broke (in flight then, or, recovering on
// another instance, published shortly before the last one received), so the copy follows the
// original within a few seconds' worth of deliveries.
const RECENT_DELIVERIES = 2048;

/** An Error carrying the protocol's error code (or timeout / disconnected / closed). */
export class RealtimeError extends Error {
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = 'RealtimeError';
    this.code = code;
    for (const [k, v] of Object.entries(extra)) if (v !== undefined) this[k] = v;
  }
}

/** Decode a JWT's payload without verifying it; null when it is not a JWT. */
export function decodeJwt(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length < 2) return null;
  try {
    let b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    const bin = atob(b64);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

// The last `capacity` keys seen, to drop a delivery that arrives twice (a Set plus a ring that
// evicts the oldest, so memory stays bounded however long the client runs).
class RecentKeys {
  constructor(capacity) {
    this._set = new Set();
    this._ring = new Array(capacity);
    this._next = 0;
  }

  /** Remembers key; false when it was already among the recent ones. */
  add(key) {
    if (this._set.has(key)) return false;
    const evicted = this._ring[this._next];
    if (evicted !== undefined) this._set.delete(evicted);
    this._ring[this._next] = key;
    this._next = (this._next + 1) % this._ring.length;
    this._set.add(key);
    return true;
  }
}

// A request's promise. It knows whether the caller looked at it (await, then, catch and finally
// all go through then()), so that a failure nobody looks at goes to 'error' rather than becoming
// an unhandled rejection. Derived promises are plain ones.
class Request extends Promise {
  static get [Symbol.species]() { return Promise; }

  then(onFulfilled, onRejected) {
    this._observed = true;
    return super.then(onFulfilled, onRejected);
  }
}

// Wraps `work` (a promise) in a Request; its rejection goes to rt's 'error' when the caller had
// attached nothing by then. 'closed' is not reported: the caller closed the client itself.
function request(rt, work) {
  const req = new Request((resolve, reject) => { work.then(resolve, reject); });
  Promise.prototype.then.call(req, undefined, (err) => {
    if (req._observed || (err && err.code === 'closed')) return;
    rt._emit('error', err);
  });
  return req;
}

// A small emitter that never throws into socket.io-client: a throwing handler is reported on
// 'error' (and an 'error' handler that throws is reported on the console).
class Emitter {
  constructor() { this._handlers = new Map(); }

  on(name, handler) {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    let set = this._handlers.get(name);
    if (!set) { set = new Set(); this._handlers.set(name, set); }
    set.add(handler);
    return () => this.off(name, handler);
  }

  once(name, handler) {
    const off = this.on(name, (...args) => { off(); handler(...args); });
    return off;
  }

  off(name, handler) {
    if (handler === undefined) { this._handlers.delete(name); return; }
    const set = this._handlers.get(name);
    if (set) { set.delete(handler); if (set.size === 0) this._handlers.delete(name); }
  }

  _emit(name, ...args) {
    const set = this._handlers.get(name);
    if (!set) return;
    for (const h of [...set]) {
      try {
        h(...args);
      } catch (err) {
        if (name === 'error') console.error('realtime: an error handler threw', err);
        else this._emit('error', err instanceof Error ? err : new Error(String(err)));
      }
    }
  }
}

/**
 * Create a realtime client and start connecting (unless `autoConnect: false`).
 * Options: url (required), token or getToken, requestTimeout (ms, default 10000),
 * refreshMarginSeconds (default 30; false disables refresh), recover (default true; false asks the
 * gateway for no recovery), and any socket.io-client option.
 */
export function createRealtime(options = {}) {
  return new Realtime(options);
}

export class Realtime extends Emitter {
  constructor(options = {}) {
    super();
    const {
      url,
      token,
      getToken,
      requestTimeout = 10000,
      refreshMarginSeconds = 30,
      autoConnect = true,
      recover = true,
      ...ioOptions
    } = options;
    if (typeof url !== 'string' || url === '') throw new TypeError('createRealtime: `url` is required');
    if (getToken !== undefined && typeof getToken !== 'function') throw new TypeError('createRealtime: `getToken` must be a function');
    if (getToken === undefined && token === undefined) throw new TypeError('createRealtime: give `token` or `getToken`');

    this._url = url;
    this._getToken = getToken;
    this._token = token ?? null;
    this._requestTimeout = requestTimeout;
    this._refreshMargin = refreshMarginSeconds === false ? null : Math.max(0, Number(refreshMarginSeconds)) * 1000;
    this._state = 'disconnected';
    this._closed = !autoConnect;
    this._gaveUp = false;
    this._channels = new Set(); // channels to be in (rejoined after a reconnect)
    this._subs = new Set(); // live Subscription handles
    this._subsById = new Map(); // current server subscription id -> Subscription
    // While offline: the server ids of the last connection (id -> Subscription); a recovered
    // socket still holds them on the server.
    this._offlineSubs = new Map();
    this._recent = new RecentKeys(RECENT_DELIVERIES);
    this._pending = []; // requests waiting for the connection: { send, fail }
    this._refreshTimer = null;
    this._retryTimer = null;
    this._serverDisconnects = 0;
    this._connectedAt = 0;
    this._session = 0; // bumped on every (dis)connect; stale async work checks it
    this._reconnection = ioOptions.reconnection !== false;
    this._delay = ioOptions.reconnectionDelay ?? 1000;
    this._delayMax = ioOptions.reconnectionDelayMax ?? 5000;

    // socket.io-client adds its recovery id and last offset to this payload by itself.
    const optOut = recover === false ? { recover: false } : {};
    const auth = getToken
      ? (cb) => {
        Promise.resolve()
          .then(() => getToken())
          .then((tok) => { this._token = tok; cb({ token: tok, ...optOut }); })
          .catch((err) => {
            this._emit('error', new RealtimeError('unauthorized', `getToken failed: ${err && err.message ? err.message : err}`, { cause: err }));
            cb({ ...optOut });
          });
      }
      : { token, ...optOut };

    this._socket = io(url, { forceNew: true, ...ioOptions, auth, autoConnect: false });
    this._wire();

    /** The methods of the product description: realtime.socketClient.joinChannel(...) etc. */
    this.socketClient = new SocketClient(this);

    if (autoConnect) {
      // 'connecting' is announced after the caller had a chance to add listeners
      this._closed = false;
      this._state = 'connecting';
      queueMicrotask(() => { if (this._state === 'connecting') this._emit('connection', { state: 'connecting' }); });
      this._socket.connect();
    }
  }

  /** The current state: 'connecting' | 'connected' | 'reconnecting' | 'disconnected'. */
  get state() { return this._state; }

  /** This connection's socket id (undefined while not connected). */
  get socketId() { return this._socket.connected ? this._socket.id : undefined; }

  /** True once connected and the channels/subscriptions are restored. */
  get connected() { return this._state === 'connected'; }

  /** True while connected on a recovered socket (same id, nothing missed since the last connection). */
  get recovered() { return this._socket.connected && this._socket.recovered === true; }

  /** The underlying socket.io-client Socket (for anything this API does not cover). */
  get socket() { return this._socket; }

  /** Start (or restart after close()) connecting. */
  connect() {
    this._closed = false;
    if (this._socket.connected || this._socket.active) return this;
    this._setState('connecting');
    this._socket.connect();
    return this;
  }

  /** Disconnect for good: no reconnection; pending requests reject with code 'closed'. */
  close() {
    this._closed = true;
    this._clearTimers();
    this._session += 1;
    this._failPending(new RealtimeError('closed', 'the realtime client was closed'));
    this._socket.disconnect();
    this._setState('disconnected', { reason: 'io client disconnect' });
  }

  /** Resolves once connected (immediately if already). */
  ready() {
    if (this._state === 'connected') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const off = this.on('connection', ({ state }) => {
        if (state === 'connected') { off(); resolve(); } else if (state === 'disconnected' && this._closed) { off(); reject(new RealtimeError('closed', 'closed before connecting')); }
      });
    });
  }

  // -------------------------------------------------------------------------------------------
  // internals

  _setState(state, extra = {}) {
    // 'disconnected' without close(): gave up (refused, reconnection off or exhausted)
    this._gaveUp = state === 'disconnected' && !this._closed;
    if (this._state === state) return;
    this._state = state;
    this._emit('connection', { state, ...extra });
  }

  _clearTimers() {
    if (this._refreshTimer) { clearTimeout(this._refreshTimer); this._refreshTimer = null; }
    if (this._retryTimer) { clearTimeout(this._retryTimer); this._retryTimer = null; }
  }

  _failPending(err) {
    const pending = this._pending;
    this._pending = [];
    for (const p of pending) p.fail(err);
  }

  _wire() {
    const s = this._socket;
    s.on('connect', () => this._onConnect());
    s.on('disconnect', (reason) => this._onDisconnect(reason));
    s.on('connect_error', (err) => this._onConnectError(err));
    s.io.on('reconnect_attempt', () => { if (!this._closed) this._setState('reconnecting'); });
    s.io.on('reconnect_failed', () => {
      if (this._closed) return;
      this._emit('error', new RealtimeError('disconnected', 'gave up reconnecting'));
      this._failPending(new RealtimeError('disconnected', 'gave up reconnecting'));
      this._setState('disconnected', { reason: 'reconnect_failed' });
    });
    // An `event` or `presence` carries one more, last argument: the offset socket.io-client keeps
    // for recovery. Only the payload goes on to the application's handlers.
    s.on('event', (e) => this._onEvent(e));
    s.on('presence', (p) => this._emit('presence', p));
    s.on('error', (e) => {
      const err = new RealtimeError(e && e.code ? e.code : 'internal', e && e.message ? e.message : 'server error', { server: e });
      this._emit('error', err);
    });
  }

  _onConnect() {
    const session = ++this._session;
    this._connectedAt = Date.now();
    this._scheduleRefresh(this._token);
    const recovered = this._socket.recovered === true;
    const offline = this._offlineSubs;
    this._offlineSubs = new Map();
    // Restore first (its packets go out before anything queued by the user meanwhile).
    const work = recovered ? this._resume(offline) : this._restore(session);
    const pending = this._pending;
    this._pending = [];
    for (const p of pending) p.send();
    if (work.length === 0) { this._setState('connected', { recovered }); return; }
    Promise.all(work).then(() => {
      if (session !== this._session || !this._socket.connected) return;
      this._setState('connected', { recovered });
    });
  }

  // A recovered socket kept its channels and subscriptions on the server, with the same ids:
  // take the ids back, and drop on the server the subscriptions unsubscribed while offline.
  _resume(offline) {
    for (const [id, sub] of offline) {
      if (sub.active) {
        sub._setId(id);
        this._subsById.set(id, sub);
      } else {
        this._send('unsubscribe', { subscriptionId: id }).catch(() => {});
      }
    }
    return [];
  }

  // A new socket: join the channels again and subscribe again (the server gives new ids).
  _restore(session) {
    const work = [];
    for (const channel of this._channels) {
      work.push(this._send('join', channel).catch((err) => {
        if (session !== this._session) return;
        if (err.code !== 'timeout' && err.code !== 'disconnected') this._channels.delete(channel);
        this._emit('error', new RealtimeError(err.code, `could not rejoin ${channel}: ${err.message}`, { channel }));
      }));
    }
    for (const sub of this._subs) {
      work.push(this._send('subscribe', subscribeArg(sub.topic, sub.filter)).then((ack) => {
        if (session !== this._session || !sub.active) {
          // unsubscribed meanwhile: drop the new server subscription too
          if (session === this._session) this._send('unsubscribe', { subscriptionId: ack.subscriptionId }).catch(() => {});
          return;
        }
        sub._setId(ack.subscriptionId);
        this._subsById.set(ack.subscriptionId, sub);
      }, (err) => {
        if (session !== this._session) return;
        this._emit('error', new RealtimeError(err.code, `could not re-subscribe to ${sub.topic}: ${err.message}`, { topic: sub.topic }));
      }));
    }
    return work;
  }

  _onDisconnect(reason) {
    this._session += 1;
    if (this._refreshTimer) { clearTimeout(this._refreshTimer); this._refreshTimer = null; }
    // No server subscription is usable while offline; a recovered socket gets these ids back.
    for (const [id, sub] of this._subsById) this._offlineSubs.set(id, sub);
    this._subsById.clear();
    for (const sub of this._subs) sub._setId(null);
    if (this._closed) { this._setState('disconnected', { reason }); return; }
    if (!this._reconnection) {
      if (this._socket.active) this._socket.disconnect(); // stop for good (connect() restarts)
      this._failPending(new RealtimeError('disconnected', `disconnected: ${reason}`));
      this._setState('disconnected', { reason });
      return;
    }
    if (this._socket.active) { this._setState('reconnecting', { reason }); return; }
    // The server ended this socket (token expiry, slow consumer, ...): socket.io-client does not
    // reconnect after "io server disconnect"; do it ourselves, with a fresh token from getToken.
    if (Date.now() - this._connectedAt > 10 * this._delayMax) this._serverDisconnects = 0;
    const n = this._serverDisconnects++;
    const delay = n === 0 ? 0 : Math.min(this._delayMax, this._delay * 2 ** (n - 1)) * (0.5 + Math.random());
    this._setState('reconnecting', { reason });
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (!this._closed && !this._socket.connected && !this._socket.active) this._socket.connect();
    }, delay);
  }

  _onConnectError(err) {
    if (this._closed) return;
    const reason = err && err.data && err.data.reason;
    const e = reason
      ? new RealtimeError('unauthorized', `connection refused: ${reason}`, { reason, cause: err })
      : new RealtimeError('connect_error', err && err.message ? err.message : 'connection error', { cause: err });
    this._emit('error', e);
    if (this._socket.active && this._reconnection) return; // the manager retries with backoff
    // refused by the server (CONNECT_ERROR), or reconnection disabled: no automatic retry
    if (this._socket.active) this._socket.disconnect();
    this._failPending(e);
    this._setState('disconnected', { reason: reason || 'connect_error' });
  }

  _onEvent(e) {
    // A recovered socket may get again an event that was in flight when the connection broke: the
    // same id (through the same subscription, or the membership) is delivered once.
    if (e && typeof e.id === 'string') {
      const key = e.subscriptionId === undefined ? e.id : `${e.id}\u0000${e.subscriptionId}`;
      if (!this._recent.add(key)) return;
    }
    this._emit('event', e);
    if (e && e.subscriptionId !== undefined) {
      const sub = this._subsById.get(e.subscriptionId);
      if (sub && sub.active) {
        try { sub.handler(e); } catch (err) { this._emit('error', err instanceof Error ? err : new Error(String(err))); }
      }
      return;
    }
    if (!e) return;
    if (e.channel === null || e.channel === undefined) this._emit('direct', e);
    else this._emit(channelKey(e.channel), e);
    if (typeof e.event === 'string') this._emit(eventKey(e.event), e);
  }

  _scheduleRefresh(token) {
    if (this._refreshTimer) { clearTimeout(this._refreshTimer); this._refreshTimer = null; }
    if (!this._getToken || this._refreshMargin === null) return;
    const claims = decodeJwt(token);
    if (!claims || typeof claims.exp !== 'number') return;
    this._scheduleRefreshAt(claims.exp * 1000);
  }

  _scheduleRefreshAt(expMs) {
    const remaining = expMs - Date.now();
    // too late: the server will disconnect the socket and we reconnect with a fresh token
    if (remaining <= 1000) return;
    // at least 0.5 s apart, so a getToken that keeps returning a nearly expired token cannot spin
    const delay = Math.max(500, remaining - Math.min(this._refreshMargin, remaining / 2));
    const session = this._session;
    this._refreshTimer = setTimeout(() => {
      this._refreshTimer = null;
      if (session === this._session) this._refresh(expMs);
    }, delay);
  }

  async _refresh(oldExpMs) {
    const session = this._session;
    try {
      const token = await this._getToken();
      if (session !== this._session) return;
      const ack = await this._send('refresh', { token });
      if (session !== this._session) return;
      this._token = token;
      this._emit('refresh', { exp: ack.exp });
      const claims = decodeJwt(token);
      const exp = typeof ack.exp === 'number' ? ack.exp : claims && claims.exp;
      if (typeof exp === 'number') this._scheduleRefreshAt(exp * 1000);
    } catch (err) {
      if (session !== this._session) return;
      this._emit('error', err instanceof RealtimeError ? new RealtimeError(err.code, `token refresh failed: ${err.message}`) : new RealtimeError('unauthorized', `token refresh failed: ${err && err.message ? err.message : err}`, { cause: err }));
      // try again while the old token is still valid
      const remaining = oldExpMs - Date.now();
      if (remaining > 1000) {
        this._refreshTimer = setTimeout(() => {
          this._refreshTimer = null;
          if (session === this._session) this._refresh(oldExpMs);
        }, Math.min(5000, remaining / 2));
      }
    }
  }

  /** Emit `event` with an ack once connected; resolve with {ok:true,...}, reject RealtimeError. */
  _send(event, arg, meta = {}) {
    if (this._closed) return Promise.reject(new RealtimeError('closed', 'the realtime client is closed'));
    if (this._gaveUp) return Promise.reject(new RealtimeError('disconnected', 'not connected (call connect() to try again)'));
    const deadline = Date.now() + this._requestTimeout;
    return new Promise((resolve, reject) => {
      let done = false;
      const finish = (fn, v) => { if (!done) { done = true; clearTimeout(timer); fn(v); } };
      const timer = setTimeout(() => finish(reject, new RealtimeError('timeout', `no answer to "${event}" within ${this._requestTimeout} ms`)), this._requestTimeout);
      const entry = {
        send: () => {
          if (done) return;
          const ms = Math.max(1, deadline - Date.now());
          meta.session = this._session;
          this._socket.timeout(ms).emit(event, arg, (err, res) => {
            if (err) {
              // an answer lost to close() is 'closed', like a call made after it
              const code = this._closed ? 'closed' : /disconnected/.test(err.message) ? 'disconnected' : 'timeout';
              finish(reject, new RealtimeError(code, `"${event}": ${err.message}`));
            } else if (res && res.ok === true) {
              finish(resolve, res);
            } else if (res && res.ok === false && res.error) {
              finish(reject, new RealtimeError(res.error.code, res.error.message, { ack: res }));
            } else {
              finish(reject, new RealtimeError('internal', `unexpected ack to "${event}": ${JSON.stringify(res)}`, { ack: res }));
            }
          });
        },
        fail: (err) => finish(reject, err),
      };
      if (this._socket.connected) entry.send();
      else this._pending.push(entry);
    });
  }
}

function channelKey(channel) { return `\u0000channel:${channel}`; }
function eventKey(name) { return `\u0000event:${name}`; }
function subscribeArg(topic, filter) { return filter === undefined || filter === null ? { topic } : { topic, filter }; }

/** A subscription made with socketClient.subscribe(); survives reconnects. */
export class Subscription {
  constructor(client, topic, filter, handler) {
    this._client = client;
    this.topic = topic;
    this.filter = filter;
    this.handler = handler;
    this.active = true;
    this._id = null;
  }

  /** The server's current id for this subscription: null while offline, the same again after a recovered reconnect, a new one otherwise. */
  get id() { return this._id; }

  _setId(id) { this._id = id; }

  /** Stop receiving; resolves with the server's ack ({ok:true}). */
  unsubscribe() { return request(this._client, this._unsubscribe()); }

  async _unsubscribe() {
    const rt = this._client;
    if (!this.active) return { ok: true };
    this.active = false;
    rt._subs.delete(this);
    const id = this._id;
    // Offline: a recovered socket drops it then (the offline map still names it).
    if (id === null) return { ok: true };
    rt._subsById.delete(id);
    this._id = null;
    try {
      return await rt._send('unsubscribe', { subscriptionId: id });
    } catch (err) {
      // a disconnect drops the server subscription anyway
      if (err.code === 'disconnected' || err.code === 'closed') return { ok: true };
      throw err;
    }
  }
}

/** The messaging methods: realtime.socketClient.* */
export class SocketClient {
  constructor(realtime) { this._rt = realtime; }

  /** This connection's socket id (undefined while not connected). */
  get socketId() { return this._rt.socketId; }

  /** Join a channel; rejoined automatically after a reconnect. Ack: {ok, channel, members}. */
  joinChannel(channel) {
    return request(this._rt, this._rt._send('join', channel).then((ack) => {
      this._rt._channels.add(typeof channel === 'string' ? channel : ack.channel);
      return ack;
    }));
  }

  /** Leave a channel (no longer rejoined). Ack: {ok, channel}. */
  leaveChannel(channel) {
    this._rt._channels.delete(channel && typeof channel === 'object' ? channel.channel : channel);
    return request(this._rt, this._rt._send('leave', channel));
  }

  /** The channels this client is in (and rejoins after a reconnect). */
  get channels() { return [...this._rt._channels]; }

  /** Publish to every member of a channel. opts.echo=false skips your own sockets. Ack: {ok, id}. */
  publish(channel, event, data, opts = {}) {
    const arg = { channel, event, data };
    if (opts && opts.echo !== undefined) arg.echo = opts.echo;
    return request(this._rt, this._rt._send('publish', arg));
  }

  /** Send an event to one socket by id. Ack: {ok, id}; rejects with code not_found. */
  directMessage(socketId, event, data) {
    return request(this._rt, this._rt._send('direct', { to: socketId, event, data }));
  }

  /**
   * Subscribe to a topic (a channel or a prefix ending in '*'), optionally filtered; handler gets
   * each matching RealtimeEvent. Resolves with a Subscription (call .unsubscribe()).
   */
  subscribe(topic, filter, handler) {
    if (typeof filter === 'function' && handler === undefined) { handler = filter; filter = undefined; }
    if (typeof handler !== 'function') return Promise.reject(new TypeError('subscribe(topic, filter?, handler): handler must be a function'));
    return request(this._rt, this._subscribe(topic, filter, handler));
  }

  async _subscribe(topic, filter, handler) {
    const rt = this._rt;
    const meta = {};
    const ack = await rt._send('subscribe', subscribeArg(topic, filter), meta);
    const sub = new Subscription(rt, topic, filter, handler);
    rt._subs.add(sub);
    if (meta.session === rt._session && rt._socket.connected) {
      sub._setId(ack.subscriptionId);
      rt._subsById.set(ack.subscriptionId, sub);
    }
    return sub;
  }

  /**
   * The members of a channel, cluster-wide, a page at a time in socket id order: at most `limit`
   * (1000 at most, and without it), those after the socket id `after`.
   * Ack: {ok, channel, members: [{socketId, userId, info, joinedAt}], next?}; `next` (present while
   * more remain) is the `after` of the next page.
   */
  members(channel, { limit, after } = {}) {
    if (limit === undefined && after === undefined) return request(this._rt, this._rt._send('members', channel));
    const arg = { channel };
    if (limit !== undefined) arg.limit = limit;
    if (after !== undefined) arg.after = after;
    return request(this._rt, this._rt._send('members', arg));
  }

  /**
   * A channel's recent events, oldest first: all that is kept, the last `limit`, or only those
   * after the offset `since` (an event id). Ack: {ok, channel, events: [RealtimeEvent], offset}.
   */
  history(channel, { limit, since } = {}) {
    const arg = { channel };
    if (limit !== undefined) arg.limit = limit;
    if (since !== undefined) arg.since = since;
    return request(this._rt, this._rt._send('history', arg));
  }

  /** Events delivered to a channel you joined (membership deliveries). Returns an off() function. */
  onChannel(channel, handler) { return this._rt.on(channelKey(channel), handler); }

  /** Events with this event name (channel memberships and direct messages). Returns off(). */
  onEvent(name, handler) { return this._rt.on(eventKey(name), handler); }

  /** Direct messages to this socket. Returns off(). */
  onDirect(handler) { return this._rt.on('direct', handler); }

  /** Presence events, for one channel or (without a channel) all. Returns off(). */
  onPresence(channel, handler) {
    if (typeof channel === 'function') return this._rt.on('presence', channel);
    return this._rt.on('presence', (p) => { if (p && p.channel === channel) handler(p); });
  }

  /** Same as realtime.on(). */
  on(name, handler) { return this._rt.on(name, handler); }

  /** Same as realtime.off(). */
  off(name, handler) { return this._rt.off(name, handler); }
}

export default createRealtime;
