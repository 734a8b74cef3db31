// transport: the Engine.IO handshake and heartbeats, as a socket.io-client user sees them.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startServer, connect, ack, uniq, sleep, until, closeAll, waitFor } from './fixture.mjs';

describe('transport', () => {
  let srv;
  before(async () => { srv = await startServer({ shards: 2, pingInterval: 300, pingTimeout: 400, maxPayload: 123456 }); });
  after(async () => { await srv?.stop(); });
  afterEach(() => closeAll(srv));

  it('the polling handshake answers sid, upgrades, pingInterval, pingTimeout, maxPayload', async () => {
    const res = await fetch(`${srv.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(res.status, 200);
    const body = await res.text();
    assert.equal(body[0], '0', body);
    const open = JSON.parse(body.slice(1));
    assert.equal(typeof open.sid, 'string');
    assert.deepEqual(open.upgrades, ['websocket']);
    assert.equal(open.pingInterval, 300);
    assert.equal(open.pingTimeout, 400);
    assert.equal(open.maxPayload, 123456);
  });

  it('default options upgrade to websocket; the socket survives many heartbeats', async () => {
    const s = await connect(srv, { transports: undefined });
    await until(() => s.io.engine.transport.name === 'websocket', 'the upgrade to websocket');
    await sleep(2500); // several ping intervals
    assert.ok(s.connected);
    const ch = uniq();
    assert.deepEqual(await ack(s, 'join', ch), { ok: true, channel: ch, members: 1 });
  });

  it('polling-only clients work and survive heartbeats', async () => {
    const s = await connect(srv, { transports: ['polling'] });
    await sleep(2000);
    assert.ok(s.connected);
    assert.equal(s.io.engine.transport.name, 'polling');
    const ch = uniq();
    const got = waitFor(s, 'event');
    await ack(s, 'join', ch);
    await ack(s, 'publish', { channel: ch, event: 'p', data: 1 });
    assert.equal((await got).data, 1);
  });

  it('the server pings, and closes a session that misses its PONG', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/socket.io/?EIO=4&transport=websocket`);
    const msgs = [];
    let closed = false;
    ws.on('message', (m) => msgs.push(m.toString()));
    ws.on('close', () => { closed = true; });
    await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
    await until(() => msgs.includes('2'), 'a PING from the server');
    await until(() => closed, 'the server closes the session without a PONG', 10000);
  });
});
