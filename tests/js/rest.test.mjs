// REST API (routes and statuses of docs/protocol.md), /metrics and CORS over real HTTP against the real
// gateway binary, with real socket.io-client sockets as channel members.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, connect, ack, mint, uniq, until, waitFor, closeAll, checkEvent,
} from './fixture.mjs';

const API_KEY = 'rest-test-api-key-0123456789';
const ORIGIN = 'http://admin.example';
const MAX_PAYLOAD = 4096;

/** fetch against the server; auth: 'key' (default), 'admin', 'none', or a raw token string. */
async function call(srv, method, path, { auth = 'key', body, type, headers = {} } = {}) {
  const h = { ...headers };
  const token = auth === 'key' ? API_KEY : auth === 'admin' ? mint({ role: 'admin' }) : auth === 'none' ? null : auth;
  if (token) h.Authorization = `Bearer ${token}`;
  if (type) h['Content-Type'] = type;
  const res = await fetch(srv.url + path, { method, headers: h, body });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, text, json };
}

function isError(r, status, code) {
  assert.equal(r.status, status, `status of ${r.text}`);
  assert.equal(r.headers.get('content-type'), 'application/json');
  assert.deepEqual(Object.keys(r.json), ['error']);
  assert.deepEqual(Object.keys(r.json.error).sort(), ['code', 'message']);
  assert.equal(r.json.error.code, code);
  assert.equal(typeof r.json.error.message, 'string');
}

const post = (srv, body, opts = {}) => call(srv, 'POST', '/api/socket/broadcast', {
  type: 'application/json', body: typeof body === 'string' ? body : JSON.stringify(body), ...opts,
});

const ROUTES = [
  ['GET', '/api/socket/channels'],
  ['GET', '/api/socket/channels/chat%3Aroom1/members'],
  ['GET', '/api/socket/channels/chat%3Aroom1/history'],
  ['GET', '/api/socket/connections'],
  ['POST', '/api/socket/broadcast'],
  ['GET', '/api/socket/openapi.json'],
];

describe('REST API [shards=2]', () => {
  let srv;
  before(async () => {
    srv = await startServer({
      shards: 2,
      maxPayload: MAX_PAYLOAD,
      extraArgs: ['--api-key', API_KEY, '--cors-origin', ORIGIN],
    });
  });
  after(async () => { await srv?.stop(); });
  afterEach(() => closeAll(srv));

  describe('credentials', () => {
    for (const [method, path] of ROUTES) {
      it(`${method} ${path}: 401 without credentials, with a user token, a bad key or an expired admin token`, async () => {
        const opts = method === 'POST' ? { type: 'application/json', body: '{}' } : {};
        for (const auth of ['none', mint({}), 'not-the-key', mint({ role: 'admin', exp: Math.floor(Date.now() / 1000) - 3600 })]) {
          const r = await call(srv, method, path, { ...opts, auth });
          isError(r, 401, 'unauthorized');
          assert.equal(r.headers.get('www-authenticate'), 'Bearer');
        }
        const basic = await call(srv, method, path, { ...opts, auth: 'none', headers: { Authorization: `Basic ${Buffer.from('a:b').toString('base64')}` } });
        isError(basic, 401, 'unauthorized');
      });
    }

    it('an admin JWT and the API key are both accepted', async () => {
      for (const auth of ['admin', 'key']) {
        const r = await call(srv, 'GET', '/api/socket/connections', { auth });
        assert.equal(r.status, 200, r.text);
      }
    });
  });

  describe('route errors', () => {
    it('an unknown route is 404, even without credentials', async () => {
      for (const path of ['/api/socket/nope', '/api/socket/channels/x', '/api/other', '/api/socket/channels/', '/socket/nope.js']) {
        for (const auth of ['none', 'key']) isError(await call(srv, 'GET', path, { auth }), 404, 'not_found');
      }
    });

    it('another method on a known route is 405 with Allow (after credentials)', async () => {
      for (const [method, path] of ROUTES) {
        const other = method === 'GET' ? 'DELETE' : 'GET';
        const r = await call(srv, other, path);
        isError(r, 405, 'method_not_allowed');
        assert.ok(r.headers.get('allow').split(/,\s*/).includes(method), r.headers.get('allow'));
        isError(await call(srv, other, path, { auth: 'none' }), 401, 'unauthorized');
      }
      const put = await call(srv, 'PUT', '/api/socket/broadcast', { type: 'application/json', body: '{}' });
      isError(put, 405, 'method_not_allowed');
      assert.equal(put.headers.get('allow'), 'POST, OPTIONS');
    });

    it('/metrics and /socket answer 405 to a POST', async () => {
      for (const path of ['/metrics', '/socket']) {
        const r = await call(srv, 'POST', path, { auth: 'none', type: 'application/json', body: '{}' });
        isError(r, 405, 'method_not_allowed');
        assert.equal(r.headers.get('allow'), 'GET, OPTIONS');
      }
    });
  });

  describe('channels and members', () => {
    it('lists active channels with member counts, filtered by a percent-decoded prefix', async () => {
      const base = uniq('rest');
      const a = `${base}:alpha`;
      const b = `${base}:beta x`;
      const s1 = await connect(srv);
      const s2 = await connect(srv);
      assert.equal((await ack(s1, 'join', a)).ok, true);
      assert.equal((await ack(s2, 'join', a)).ok, true);
      assert.equal((await ack(s2, 'join', b)).ok, true);

      const all = await call(srv, 'GET', '/api/socket/channels');
      assert.equal(all.status, 200);
      assert.equal(all.headers.get('content-type'), 'application/json');
      assert.deepEqual(Object.keys(all.json).sort(), ['channels', 'total']);
      assert.equal(all.json.total, all.json.channels.length);
      const names = all.json.channels.map((c) => c.name);
      assert.deepEqual(names, [...names].sort(), 'sorted by name');
      assert.deepEqual(all.json.channels.find((c) => c.name === a), { name: a, members: 2 });

      const filtered = await call(srv, 'GET', `/api/socket/channels?prefix=${encodeURIComponent(base)}`);
      assert.deepEqual(filtered.json, { channels: [{ name: a, members: 2 }, { name: b, members: 1 }], total: 2 });
      const space = await call(srv, 'GET', `/api/socket/channels?prefix=${encodeURIComponent(`${base}:beta `)}`);
      assert.deepEqual(space.json, { channels: [{ name: b, members: 1 }], total: 1 });
      const limited = await call(srv, 'GET', `/api/socket/channels?prefix=${encodeURIComponent(base)}&limit=1`);
      assert.deepEqual(limited.json, { channels: [{ name: a, members: 2 }], total: 2 });
      isError(await call(srv, 'GET', '/api/socket/channels?limit=-1'), 400, 'bad_request');
      const none = await call(srv, 'GET', '/api/socket/channels?prefix=%E2%9C%93nothing-here');
      assert.deepEqual(none.json, { channels: [], total: 0 });

      await ack(s2, 'leave', b);
      const after = await call(srv, 'GET', `/api/socket/channels?prefix=${encodeURIComponent(base)}`);
      assert.deepEqual(after.json, { channels: [{ name: a, members: 2 }], total: 1 });
    });

    it('lists members with userId, socketId, info and joinedAt; encoded and raw names are the same', async () => {
      const ch = uniq('chat');
      const info = { name: 'Ada', tags: ['x'] };
      const before = Date.now();
      const s1 = await connect(srv, { sub: 'rest-user-1', claims: { info } });
      const s2 = await connect(srv, { sub: 'rest-user-2' });
      await ack(s1, 'join', ch);
      await ack(s2, 'join', ch);
      const enc = await call(srv, 'GET', `/api/socket/channels/${encodeURIComponent(ch)}/members`);
      const raw = await call(srv, 'GET', `/api/socket/channels/${ch}/members`);
      assert.equal(enc.status, 200);
      assert.equal(enc.json.channel, ch);
      assert.equal(raw.json.channel, ch);
      for (const r of [enc, raw]) {
        const ms = [...r.json.members].sort((x, y) => x.userId.localeCompare(y.userId));
        assert.equal(ms.length, 2);
        for (const m of ms) {
          assert.deepEqual(Object.keys(m).sort(), ['info', 'joinedAt', 'socketId', 'userId']);
          assert.ok(Number.isInteger(m.joinedAt) && m.joinedAt >= before - 5000 && m.joinedAt <= Date.now() + 5000);
        }
        assert.deepEqual([ms[0].userId, ms[0].socketId, ms[0].info], ['rest-user-1', s1.id, info]);
        assert.deepEqual([ms[1].userId, ms[1].socketId, ms[1].info], ['rest-user-2', s2.id, null]);
      }
      const slash = `${ch}/sub`;
      await ack(s1, 'join', slash);
      const sl = await call(srv, 'GET', `/api/socket/channels/${encodeURIComponent(slash)}/members`);
      assert.equal(sl.json.channel, slash);
      assert.equal(sl.json.members.length, 1);
    });

    it('an inactive channel has no members; a bad name is 400 invalid_channel', async () => {
      const r = await call(srv, 'GET', `/api/socket/channels/${encodeURIComponent(uniq('idle'))}/members`);
      assert.equal(r.status, 200);
      assert.deepEqual(r.json.members, []);
      isError(await call(srv, 'GET', '/api/socket/channels/a%01b/members'), 400, 'invalid_channel');
      isError(await call(srv, 'GET', `/api/socket/channels/${'x'.repeat(201)}/members`), 400, 'invalid_channel');
      isError(await call(srv, 'GET', '/api/socket/channels/%FF%FE/members'), 400, 'invalid_channel');
      isError(await call(srv, 'GET', '/api/socket/channels//members'), 400, 'invalid_channel');
    });
  });

  describe('connections', () => {
    it('counts sockets per instance and per shard', async () => {
      const before = (await call(srv, 'GET', '/api/socket/connections')).json;
      assert.deepEqual(Object.keys(before).sort(), ['connections', 'instances']);
      assert.equal(before.instances.length, 1);
      assert.equal(before.instances[0].shards.length, 2);
      const socks = await Promise.all([0, 1, 2, 3].map(() => connect(srv)));
      const now = await until(async () => {
        const j = (await call(srv, 'GET', '/api/socket/connections')).json;
        return j.connections === before.connections + 4 && j;
      }, 'four more connections');
      const inst = now.instances[0];
      assert.equal(typeof inst.id, 'string');
      assert.equal(inst.connections, now.connections);
      assert.equal(inst.shards.reduce((x, y) => x + y, 0), now.connections);
      for (const s of socks) s.close();
      await until(async () => (await call(srv, 'GET', '/api/socket/connections')).json.connections === before.connections,
        'the connections to close');
    });
  });

  describe('broadcast', () => {
    it('202 with an id; members and subscribers receive it with from null', async () => {
      const ch = uniq('news');
      const member = await connect(srv);
      const subscriber = await connect(srv);
      await ack(member, 'join', ch);
      const sub = await ack(subscriber, 'subscribe', { topic: `${ch.split(':')[0]}:*` });
      const got = waitFor(member, 'event', (e) => e.channel === ch);
      const gotSub = waitFor(subscriber, 'event', (e) => e.channel === ch);
      const r = await post(srv, { channel: ch, event: 'notice', data: { text: 'maintenance at 5' } }, { auth: 'admin' });
      assert.equal(r.status, 202, r.text);
      assert.deepEqual(Object.keys(r.json).sort(), ['id', 'ok']);
      assert.equal(r.json.ok, true);
      assert.equal(typeof r.json.id, 'string');
      const e = checkEvent(await got, { channel: ch, event: 'notice', data: { text: 'maintenance at 5' }, from: null });
      assert.equal(e.id, r.json.id);
      checkEvent(await gotSub, { channel: ch, event: 'notice', from: null, subscriptionId: sub.subscriptionId });

      const nodata = waitFor(member, 'event', (x) => x.event === 'nodata');
      assert.equal((await post(srv, { channel: ch, event: 'nodata' })).status, 202);
      assert.equal((await nodata).data, null);
      assert.equal((await post(srv, { channel: ch, event: 'json' }, { type: 'application/json; charset=utf-8' })).status, 202);
    });

    it('a broadcast to an inactive channel is accepted', async () => {
      const r = await post(srv, { channel: uniq('nobody'), event: 'x', data: 1 });
      assert.equal(r.status, 202);
    });

    it('400 for bad JSON, a missing field, a wrong type, a reserved event; invalid_channel for a bad name', async () => {
      isError(await post(srv, '{"channel":'), 400, 'bad_request');
      isError(await post(srv, ''), 400, 'bad_request');
      isError(await post(srv, '[1,2]'), 400, 'bad_request');
      isError(await post(srv, { event: 'x' }), 400, 'bad_request');
      isError(await post(srv, { channel: 'a' }), 400, 'bad_request');
      isError(await post(srv, { channel: 42, event: 'x' }), 400, 'bad_request');
      isError(await post(srv, { channel: null, event: 'x' }), 400, 'bad_request');
      isError(await post(srv, { channel: 'a', event: 7 }), 400, 'bad_request');
      isError(await post(srv, { channel: 'a', event: 'connect' }), 400, 'bad_request');
      isError(await post(srv, { channel: 'a', event: '' }), 400, 'bad_request');
      isError(await post(srv, { channel: '', event: 'x' }), 400, 'invalid_channel');
      isError(await post(srv, { channel: 'a\u0007b', event: 'x' }), 400, 'invalid_channel');
      isError(await post(srv, { channel: 'x'.repeat(201), event: 'x' }), 400, 'invalid_channel');
    });

    it('415 for a body that is not JSON by Content-Type', async () => {
      const body = JSON.stringify({ channel: 'a', event: 'x' });
      isError(await post(srv, body, { type: 'text/plain' }), 415, 'unsupported_media_type');
      isError(await post(srv, body, { type: 'application/x-www-form-urlencoded' }), 415, 'unsupported_media_type');
      const none = await call(srv, 'POST', '/api/socket/broadcast', { body: new Uint8Array(Buffer.from(body)) });
      isError(none, 415, 'unsupported_media_type');
      isError(await post(srv, body, { type: 'text/plain', auth: 'none' }), 401, 'unauthorized');
    });

    it('413 for a body over --max-payload; the connection keeps working', async () => {
      const big = JSON.stringify({ channel: 'a', event: 'x', data: 'y'.repeat(MAX_PAYLOAD) });
      isError(await post(srv, big), 413, 'too_large');
      isError(await post(srv, big, { auth: 'none' }), 401, 'unauthorized');
      assert.equal((await post(srv, { channel: 'a', event: 'x', data: 'y'.repeat(MAX_PAYLOAD - 100) })).status, 202);
      assert.equal((await call(srv, 'GET', '/api/socket/connections')).status, 200);
    });
  });

  describe('openapi.json', () => {
    it('is served as JSON', async () => {
      const r = await call(srv, 'GET', '/api/socket/openapi.json');
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('content-type'), 'application/json');
      assert.match(r.json.openapi, /^3\./);
    });
  });

  describe('CORS', () => {
    it('allowed origins get Access-Control-Allow-Origin; others do not', async () => {
      const ok = await call(srv, 'GET', '/api/socket/connections', { headers: { Origin: ORIGIN } });
      assert.equal(ok.headers.get('access-control-allow-origin'), ORIGIN);
      const err = await call(srv, 'GET', '/api/socket/connections', { auth: 'none', headers: { Origin: ORIGIN } });
      assert.equal(err.status, 401);
      assert.equal(err.headers.get('access-control-allow-origin'), ORIGIN);
      const other = await call(srv, 'GET', '/api/socket/connections', { headers: { Origin: 'http://evil.example' } });
      assert.equal(other.status, 200);
      assert.equal(other.headers.get('access-control-allow-origin'), null);
    });

    it('answers preflights on REST routes without credentials', async () => {
      const r = await call(srv, 'OPTIONS', '/api/socket/broadcast', {
        auth: 'none',
        headers: { Origin: ORIGIN, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization,content-type' },
      });
      assert.equal(r.status, 204);
      assert.equal(r.headers.get('access-control-allow-origin'), ORIGIN);
      assert.match(r.headers.get('access-control-allow-methods'), /POST/);
      assert.match(r.headers.get('access-control-allow-headers').toLowerCase(), /authorization/);
      assert.match(r.headers.get('access-control-allow-headers').toLowerCase(), /content-type/);
      const g = await call(srv, 'OPTIONS', '/api/socket/channels/a/members', { auth: 'none', headers: { Origin: ORIGIN } });
      assert.equal(g.status, 204);
      assert.match(g.headers.get('access-control-allow-methods'), /GET/);
    });
  });

  describe('/metrics', () => {
    it('is Prometheus text without credentials, and counts connections, events, deliveries and refusals', async () => {
      const read = async () => {
        const r = await call(srv, 'GET', '/metrics', { auth: 'none' });
        assert.equal(r.status, 200);
        assert.match(r.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
        return r.text;
      };
      const total = (text, name, labels = {}) => text.split('\n')
        .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
        .filter((l) => Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)))
        .reduce((a, l) => a + Number(l.split(/\s+/).pop()), 0);
      const t0 = await read();
      for (const name of ['socket_gateway_connections', 'socket_gateway_channels', 'socket_gateway_subscriptions',
        'socket_gateway_events_in_total', 'socket_gateway_deliveries_total', 'socket_gateway_bytes_in_total',
        'socket_gateway_bytes_out_total', 'socket_gateway_slow_consumer_disconnects_total',
        'socket_gateway_delivery_latency_seconds_bucket', 'socket_gateway_engineio_sessions']) {
        assert.match(t0, new RegExp(`^# TYPE ${name.replace(/_bucket$/, '')} `, 'm'), name);
      }
      assert.match(t0, /^socket_gateway_connections\{instance="[^"]+",shard="1"\} \d+$/m);

      const ch = uniq('metrics');
      const a = await connect(srv);
      const b = await connect(srv);
      await ack(a, 'join', ch);
      await ack(b, 'join', ch);
      const got = waitFor(b, 'event', (e) => e.channel === ch);
      await ack(a, 'publish', { channel: ch, event: 'm', data: 1 });
      await got;
      await connect(srv, { token: 'garbage' }).catch(() => {});
      const t1 = await until(async () => {
        const t = await read();
        return total(t, 'socket_gateway_deliveries_total') >= total(t0, 'socket_gateway_deliveries_total') + 2 && t;
      }, 'the deliveries to be counted');
      assert.ok(total(t1, 'socket_gateway_connections') >= 2);
      assert.ok(total(t1, 'socket_gateway_channels') >= 1);
      assert.ok(total(t1, 'socket_gateway_events_in_total') >= total(t0, 'socket_gateway_events_in_total') + 3);
      assert.ok(total(t1, 'socket_gateway_bytes_in_total') > total(t0, 'socket_gateway_bytes_in_total'));
      assert.ok(total(t1, 'socket_gateway_delivery_latency_seconds_count') >= total(t0, 'socket_gateway_delivery_latency_seconds_count') + 2);
      assert.ok(total(t1, 'socket_gateway_auth_refusals_total', { reason: 'malformed' }) >= 1);
      assert.ok(total(t1, 'socket_gateway_rest_requests_total', { status: '401' }) >= 1);
    });

    it('/healthz and /readyz still answer', async () => {
      assert.equal((await call(srv, 'GET', '/healthz', { auth: 'none' })).status, 200);
      assert.equal((await call(srv, 'GET', '/readyz', { auth: 'none' })).status, 200);
    });
  });
});
