// Moderation through the REST API, across two instances on one Redis, with the real
// socket.io-client: disconnect one socket (with or without letting it reconnect), every socket
// of a user on every instance, and take a socket out of a channel. The client sees the reason
// (an `error` event) before the cut; without reconnect it gets a Socket.IO DISCONNECT, after
// which socket.io-client does not come back by itself.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  startServer, connect, ack, mint, uniq, uniqUser, record, until, sleep, waitFor, REDIS_URL, redisCmd, dropRedisKeys, api,
} from './fixture.mjs';


/** Resolves with the disconnect reason and whether the client is still trying to reconnect. */
function disconnected(s) {
  return new Promise((resolve) => s.once('disconnect', (reason) => resolve({ reason, at: Date.now() })));
}

describe('moderation across two instances', () => {
  const prefix = `tmod${crypto.randomBytes(4).toString('hex')}`;
  let A;
  let B;
  before(async () => {
    await redisCmd(REDIS_URL, 'PING'); // fails (not skips) without a redis-server
    const node = (name) => startServer({
      shards: 2,
      extraArgs: ['--redis-url', REDIS_URL, '--redis-prefix', prefix,
        '--instance-id', `gateway-${name}-${crypto.randomBytes(3).toString('hex')}.mod`,
        '--heartbeat-interval', '500', '--instance-expiry', '3000'],
    });
    [A, B] = await Promise.all([node('a'), node('b')]);
    await until(async () => ((await api(A, 'GET', '/api/socket/connections')).json?.instances?.length ?? 0) === 2, 'both instances in the views');
  });
  after(async () => {
    await Promise.all([A, B].filter(Boolean).map((n) => n.stop()));
    await dropRedisKeys(REDIS_URL, prefix).catch(() => {});
  });

  it('DELETE a socket on the other instance without reconnect: the client sees the reason and does not come back', async () => {
    const s = await connect(B, { transports: ['websocket'], reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 100 });
    const errors = record(s, 'error');
    const gone = disconnected(s);
    let reconnects = 0;
    s.io.on('reconnect_attempt', () => { reconnects += 1; });
    const r = await api(A, 'DELETE', `/api/socket/connections/${encodeURIComponent(s.id)}?reason=${encodeURIComponent('spamming chat:lobby')}`);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { ok: true, socketId: r.json.socketId });
    const d = await gone;
    assert.equal(d.reason, 'io server disconnect');
    assert.deepEqual(errors, [{ code: 'disconnected', message: 'spamming chat:lobby', reconnect: false }]);
    await sleep(500);
    assert.equal(s.connected, false);
    assert.equal(s.active, false, 'socket.io-client does not reconnect after a server DISCONNECT');
    assert.equal(reconnects, 0);
    const again = await api(A, 'DELETE', `/api/socket/connections/${encodeURIComponent(r.json.socketId)}`);
    assert.equal(again.status, 404, again.text);
    assert.equal(again.json.error.code, 'not_found');
    s.close();
  });

  it('DELETE with reconnect=true: a transport close; the client reconnects by itself as a new socket', async () => {
    const s = await connect(A, { transports: ['websocket'], reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 100 });
    const id0 = s.id;
    const errors = record(s, 'error');
    const gone = disconnected(s);
    const back = new Promise((resolve) => s.io.once('reconnect', resolve));
    const r = await api(B, 'DELETE', `/api/socket/connections/${encodeURIComponent(id0)}?reconnect=true`);
    assert.equal(r.status, 200, r.text);
    assert.equal((await gone).reason, 'transport close');
    assert.deepEqual(errors, [{ code: 'disconnected', message: 'disconnected by an administrator', reconnect: true }]);
    await back;
    await until(() => s.connected, 'reconnected');
    assert.notEqual(s.id, id0, 'a kicked socket is not recovered');
    assert.equal(s.recovered, false);
    s.close();
  });

  it('POST users/:userId/disconnect cuts every socket of the user on both instances, and only those', async () => {
    const user = uniqUser('banned');
    const opts = { sub: user, transports: ['websocket'], reconnection: true, reconnectionDelay: 50 };
    const mine = [await connect(A, opts), await connect(A, opts), await connect(B, opts)];
    const other = await connect(B, { transports: ['websocket'] });
    const gone = mine.map(disconnected);
    const errs = mine.map((s) => record(s, 'error'));
    const r = await api(A, 'POST', `/api/socket/users/${encodeURIComponent(user)}/disconnect`, { reason: 'banned for a day' });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { ok: true, userId: user, disconnected: 2, otherInstances: 1 });
    for (const d of await Promise.all(gone)) assert.equal(d.reason, 'io server disconnect');
    for (const e of errs) assert.deepEqual(e, [{ code: 'disconnected', message: 'banned for a day', reconnect: false }]);
    await sleep(300);
    assert.ok(mine.every((s) => !s.connected && !s.active), 'none comes back');
    assert.ok(other.connected, 'another user is unaffected');
    const none = await api(B, 'POST', `/api/socket/users/${encodeURIComponent(user)}/disconnect`);
    assert.deepEqual(none.json, { ok: true, userId: user, disconnected: 0, otherInstances: 0 });
    other.close();
  });

  it('DELETE channels/:channel/members/:socketId takes a socket on the other instance out of the channel', async () => {
    const ch = uniq('mod');
    const victim = await connect(B, { transports: ['websocket'] });
    const peer = await connect(A, { transports: ['websocket'] });
    await ack(victim, 'join', ch);
    await ack(peer, 'join', ch);
    const verrs = record(victim, 'error');
    const vevents = record(victim, 'event');
    const leave = waitFor(peer, 'presence', (p) => p.type === 'leave' && p.member.socketId === victim.id);
    const r = await api(A, 'DELETE', `/api/socket/channels/${encodeURIComponent(ch)}/members/${encodeURIComponent(victim.id)}?reason=off-topic`);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { ok: true, channel: ch, socketId: victim.id });
    await leave;
    await until(() => verrs.length === 1, 'the removed socket is told');
    assert.deepEqual(verrs[0], { code: 'removed', channel: ch, message: 'off-topic' });
    const members = await api(B, 'GET', `/api/socket/channels/${encodeURIComponent(ch)}/members`);
    assert.deepEqual(members.json.members.map((m) => m.socketId), [peer.id]);
    const pub = await ack(peer, 'publish', { channel: ch, event: 'after', data: 1 });
    assert.equal(pub.ok, true);
    await sleep(300);
    assert.equal(vevents.length, 0, 'no event of the channel reaches it any more');
    assert.ok(victim.connected, 'it stays connected');
    const again = await api(A, 'DELETE', `/api/socket/channels/${encodeURIComponent(ch)}/members/${encodeURIComponent(victim.id)}`);
    assert.equal(again.status, 404, again.text);
    victim.close();
    peer.close();
  });

  it('credentials, methods and unknown ids', async () => {
    const noAuth = await fetch(`${A.url}/api/socket/connections/x-0-0000000000000001`, { method: 'DELETE' });
    assert.equal(noAuth.status, 401);
    const get = await api(A, 'GET', '/api/socket/connections/x-0-0000000000000001');
    assert.equal(get.status, 405);
    assert.equal(get.json.error.code, 'method_not_allowed');
    for (const id of ['garbage', `${B.url.length}-0-0000000000000001`, 'nosuch-instance-0-0000000000000001']) {
      const r = await api(A, 'DELETE', `/api/socket/connections/${encodeURIComponent(id)}`);
      assert.equal(r.status, 404, `${id}: ${r.text}`);
    }
    const long = await api(A, 'DELETE', `/api/socket/connections/x-0-0000000000000001?reason=${'x'.repeat(300)}`);
    assert.equal(long.status, 400, long.text);
    const badBody = await api(A, 'POST', '/api/socket/users/u1/disconnect', { reconnect: 'yes' });
    assert.equal(badBody.status, 400, badBody.text);
  });
});
