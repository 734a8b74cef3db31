#!/usr/bin/env node
// Reference peer for the load-test harness: the socket-gateway protocol
// (docs/protocol.md, as it stood before 2026-12) implemented the way the original product was —
// Express + Socket.IO 4 + jsonwebtoken, and @socket.io/redis-adapter for the cluster case.
//
// Implemented: JWT auth (auth payload / Bearer header / ?token, HS256 with --jwt-secret),
// events join / leave / publish (echo:false) / direct / subscribe (exact names and `prefix*`,
// no filters) / unsubscribe / members / refresh with the protocol's ack shapes, RealtimeEvent
// and presence payloads, `error` events for failures without an ack, /healthz.
// Not implemented: the REST API, admin page, metrics, subscription filters, the `channels`
// claim, token expiry disconnects. With --redis-url, prefix subscriptions only see publishes
// made on instances that know the prefix (this process's own).
//
// Usage: node server.js --port 3001 --jwt-secret S [--host 127.0.0.1] [--redis-url redis://...]
'use strict';

const http = require('http');
const express = require('express');
const { Server } = require('socket.io');
const jwt = require('jsonwebtoken');

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  const env = process.env[`PEER_${name.toUpperCase().replace(/-/g, '_')}`];
  return env !== undefined ? env : dflt;
}

const PORT = Number(arg('port', 3001));
const HOST = arg('host', '127.0.0.1');
const SECRET = arg('jwt-secret', process.env.LOADTEST_JWT_SECRET);
const REDIS_URL = arg('redis-url', '');
if (!SECRET) {
  console.error('--jwt-secret is required');
  process.exit(2);
}

const RESERVED = new Set(['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener']);
const INSTANCE = Math.random().toString(36).slice(2, 8);
let idCounter = 0;
function newId() {
  // Unique and sortable for one publisher: time, then a counter, then the instance.
  idCounter = (idCounter + 1) % 1e9;
  return `${Date.now().toString().padStart(14, '0')}-${idCounter.toString().padStart(9, '0')}-${INSTANCE}`;
}

class ApiError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function channelArg(arg) {
  const c = typeof arg === 'string' ? arg : arg && typeof arg === 'object' ? arg.channel : undefined;
  if (typeof c !== 'string') throw new ApiError('bad_request', 'channel must be a string');
  checkName(c);
  return c;
}

function checkName(c) {
  // eslint-disable-next-line no-control-regex
  if (Buffer.byteLength(c) < 1 || Buffer.byteLength(c) > 200 || /[\u0000-\u001f\u007f-\u009f]/.test(c)) {
    throw new ApiError('invalid_channel', 'invalid channel name');
  }
}

function checkEvent(e) {
  if (typeof e !== 'string' || e.length < 1 || Buffer.byteLength(e) > 100 || RESERVED.has(e)) {
    throw new ApiError('bad_request', 'invalid event name');
  }
}

const app = express();
app.get('/healthz', (_req, res) => res.json({ ok: true }));
const server = http.createServer(app);
const io = new Server(server, {
  path: '/socket.io/',
  pingInterval: 25000,
  pingTimeout: 20000,
  maxHttpBufferSize: 1e6,
  cors: { origin: '*' },
});

function verify(token) {
  let claims;
  try {
    claims = jwt.verify(token, SECRET, { algorithms: ['HS256'], clockTolerance: 5 });
  } catch (e) {
    const reason =
      e.name === 'TokenExpiredError' ? 'expired'
        : e.name === 'NotBeforeError' ? 'not_yet_valid'
          : /signature/.test(e.message) ? 'bad_signature'
            : /algorithm/.test(e.message) ? 'wrong_algorithm'
              : 'malformed';
    throw Object.assign(new Error('unauthorized'), { data: { reason } });
  }
  if (typeof claims.sub !== 'string' || typeof claims.exp !== 'number') {
    throw Object.assign(new Error('unauthorized'), { data: { reason: 'missing_claim' } });
  }
  return claims;
}

io.use((socket, next) => {
  const h = socket.handshake;
  let token = h.auth && typeof h.auth.token === 'string' ? h.auth.token : undefined;
  if (!token && typeof h.headers.authorization === 'string' && h.headers.authorization.startsWith('Bearer ')) {
    token = h.headers.authorization.slice(7);
  }
  if (!token && typeof h.query.token === 'string') token = h.query.token;
  if (!token) return next(Object.assign(new Error('unauthorized'), { data: { reason: 'missing_token' } }));
  try {
    const claims = verify(token);
    socket.data.userId = claims.sub;
    socket.data.info = claims.info === undefined ? null : claims.info;
    socket.data.joined = {}; // channel -> joinedAt
    next();
  } catch (e) {
    next(e);
  }
});

// Prefix subscriptions known to this process: prefix -> highest subscription number.
const prefixSubs = new Map();
// Exact subscriptions: topic -> highest subscription number.
const exactSubs = new Map();

function member(socket, channel) {
  return { socketId: socket.id, userId: socket.data.userId, info: socket.data.info, joinedAt: socket.data.joined[channel] };
}

async function memberCount(room) {
  if (REDIS_URL) return (await io.in(room).allSockets()).size;
  const r = io.of('/').adapter.rooms.get(room);
  return r ? r.size : 0;
}

function deliver(channel, evt, exceptUser) {
  const base = io.to(`ch:${channel}`);
  (exceptUser ? base.except(`user:${exceptUser}`) : base).emit('event', evt);
  const subs = [];
  const n = exactSubs.get(channel);
  if (n) for (let i = 1; i <= n; i++) subs.push(`${channel}#${i}`);
  for (const [p, m] of prefixSubs) {
    if (channel.startsWith(p)) for (let i = 1; i <= m; i++) subs.push(`${p}*#${i}`);
  }
  for (const s of subs) {
    const to = io.to(`sub:${s}`);
    (exceptUser ? to.except(`user:${exceptUser}`) : to).emit('event', { ...evt, subscriptionId: s });
  }
}

io.on('connection', (socket) => {
  socket.join(`user:${socket.data.userId}`);
  socket.data.subs = new Map(); // subscriptionId -> room

  const handlers = {
    async join(arg) {
      const channel = channelArg(arg);
      const room = `ch:${channel}`;
      if (!socket.rooms.has(room)) {
        socket.data.joined[channel] = Date.now();
        socket.join(room);
        io.to(room).emit('presence', { channel, type: 'join', member: member(socket, channel), ts: Date.now() });
      }
      return { channel, members: await memberCount(room) };
    },
    async leave(arg) {
      const channel = channelArg(arg);
      const room = `ch:${channel}`;
      if (socket.rooms.has(room)) {
        const m = member(socket, channel);
        socket.leave(room);
        delete socket.data.joined[channel];
        io.to(room).emit('presence', { channel, type: 'leave', member: m, ts: Date.now() });
      }
      return { channel };
    },
    async publish(arg) {
      if (!arg || typeof arg !== 'object' || typeof arg.channel !== 'string') {
        throw new ApiError('bad_request', 'publish needs {channel, event, data}');
      }
      checkName(arg.channel);
      checkEvent(arg.event);
      const evt = {
        id: newId(),
        channel: arg.channel,
        event: arg.event,
        data: arg.data === undefined ? null : arg.data,
        from: { socketId: socket.id, userId: socket.data.userId },
        ts: Date.now(),
      };
      deliver(arg.channel, evt, arg.echo === false ? socket.data.userId : null);
      return { id: evt.id };
    },
    async direct(arg) {
      if (!arg || typeof arg !== 'object' || typeof arg.to !== 'string') {
        throw new ApiError('bad_request', 'direct needs {to, event, data}');
      }
      checkEvent(arg.event);
      const exists = REDIS_URL
        ? (await io.in(arg.to).fetchSockets()).some((s) => s.id === arg.to)
        : io.of('/').sockets.has(arg.to);
      if (!exists) throw new ApiError('not_found', 'no such socket');
      const evt = {
        id: newId(),
        channel: null,
        to: arg.to,
        event: arg.event,
        data: arg.data === undefined ? null : arg.data,
        from: { socketId: socket.id, userId: socket.data.userId },
        ts: Date.now(),
      };
      io.to(arg.to).emit('event', evt);
      return { id: evt.id };
    },
    async subscribe(arg) {
      if (!arg || typeof arg !== 'object' || typeof arg.topic !== 'string') {
        throw new ApiError('bad_request', 'subscribe needs {topic}');
      }
      if (arg.filter !== undefined) throw new ApiError('bad_request', 'filters are not supported by this peer');
      const prefix = arg.topic.endsWith('*');
      const key = prefix ? arg.topic.slice(0, -1) : arg.topic;
      checkName(prefix && key === '' ? 'x' : key);
      const map = prefix ? prefixSubs : exactSubs;
      // The n-th subscription of this socket to this topic.
      let n = 1;
      while (socket.data.subs.has(`${arg.topic}#${n}`)) n++;
      const id = `${arg.topic}#${n}`;
      if ((map.get(key) || 0) < n) map.set(key, n);
      socket.data.subs.set(id, `sub:${id}`);
      socket.join(`sub:${id}`);
      return { subscriptionId: id };
    },
    async unsubscribe(arg) {
      const id = arg && arg.subscriptionId;
      if (typeof id !== 'string' || !socket.data.subs.has(id)) {
        throw new ApiError('unknown_subscription', 'unknown subscription');
      }
      socket.leave(socket.data.subs.get(id));
      socket.data.subs.delete(id);
      return {};
    },
    async members(arg) {
      const channel = channelArg(arg);
      const sockets = await io.in(`ch:${channel}`).fetchSockets();
      return {
        channel,
        members: sockets.map((s) => ({
          socketId: s.id,
          userId: s.data.userId,
          info: s.data.info,
          joinedAt: s.data.joined ? s.data.joined[channel] : null,
        })),
      };
    },
    async refresh(arg) {
      const token = arg && arg.token;
      if (typeof token !== 'string') throw new ApiError('bad_request', 'refresh needs {token}');
      let claims;
      try {
        claims = verify(token);
      } catch (_e) {
        throw new ApiError('unauthorized', 'invalid token');
      }
      if (claims.sub !== socket.data.userId) throw new ApiError('forbidden', 'sub changed');
      return { exp: claims.exp };
    },
  };

  for (const [name, fn] of Object.entries(handlers)) {
    socket.on(name, async (...args) => {
      const ack = typeof args[args.length - 1] === 'function' ? args.pop() : null;
      try {
        const r = await fn(args[0]);
        if (ack) ack({ ok: true, ...r });
      } catch (e) {
        const err = e instanceof ApiError ? { code: e.code, message: e.message } : { code: 'internal', message: String(e && e.message) };
        if (ack) ack({ ok: false, error: err });
        else socket.emit('error', err);
      }
    });
  }

  socket.on('disconnecting', () => {
    for (const channel of Object.keys(socket.data.joined)) {
      const m = member(socket, channel);
      socket.to(`ch:${channel}`).emit('presence', { channel, type: 'leave', member: m, ts: Date.now() });
    }
  });
});

async function main() {
  if (REDIS_URL) {
    const { createClient } = require('redis');
    const { createAdapter } = require('@socket.io/redis-adapter');
    const pub = createClient({ url: REDIS_URL });
    const sub = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub, { key: arg('redis-prefix', 'peer') }));
  }
  server.listen(PORT, HOST, () => {
    console.log(`node-socketio-peer listening on http://${HOST}:${PORT}${REDIS_URL ? ' (redis adapter)' : ''}`);
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
