// namespaces: any namespace but `/` is refused; the Engine.IO session stays usable.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startServer, Manager, mint, ack, uniq, waitFor, until, closeAll, ONCE } from './fixture.mjs';

describe(`namespaces [${ONCE.name}]`, () => {
  let srv;
  const managers = [];
  before(async () => { srv = await startServer({ shards: ONCE.shards }); });
  afterEach(() => { for (const m of managers.splice(0)) { for (const s of m.nsps ? Object.values(m.nsps) : []) s.close(); m.engine?.close(); } closeAll(srv); });
  after(async () => { await srv?.stop(); });

  for (const transports of [undefined, ['websocket']]) {
    const tname = transports ? 'websocket' : 'default';
    it(`an unknown namespace gets CONNECT_ERROR "Invalid namespace"; / works on the same manager (${tname})`, async () => {
      const opts = { reconnection: false, ...(transports ? { transports } : {}) };
      const manager = new Manager(srv.url, opts);
      managers.push(manager);
      const main = manager.socket('/', { auth: { token: mint() } });
      main.connect();
      await waitFor(main, 'connect');
      const admin = manager.socket('/admin', { auth: { token: mint() } });
      let adminConnected = false;
      admin.on('connect', () => { adminConnected = true; });
      admin.connect();
      const err = await waitFor(admin, 'connect_error');
      assert.equal(err.message, 'Invalid namespace');
      assert.equal(adminConnected, false);
      // the main namespace keeps working on the same Engine.IO session
      assert.ok(main.connected);
      const ch = uniq();
      assert.deepEqual(await ack(main, 'join', ch), { ok: true, channel: ch, members: 1 });
      const got = waitFor(main, 'event');
      await ack(main, 'publish', { channel: ch, event: 'still', data: 'here' });
      assert.equal((await got).data, 'here');
      // a second, later `/` socket on the same manager is not possible (one per nsp), but another
      // unknown namespace is refused the same way
      const other = manager.socket('/other/ns', { auth: { token: mint() } });
      other.connect();
      assert.equal((await waitFor(other, 'connect_error')).message, 'Invalid namespace');
      assert.ok(main.connected);
      assert.equal(manager.engine.id.length > 0, true);
    });

  }

  it('on one raw Engine.IO session: CONNECT to /nope is refused, then CONNECT to / succeeds', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/socket.io/?EIO=4&transport=websocket`);
    const inbox = [];
    ws.on('message', (m) => { const t = m.toString(); if (t === '2') ws.send('3'); else inbox.push(t); });
    await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
    try {
      await until(() => inbox.some((m) => m.startsWith('0{')), 'the Engine.IO OPEN');
      ws.send(`40/nope,${JSON.stringify({ token: mint() })}`);
      const refusal = await until(() => inbox.find((m) => m.startsWith('44')), 'CONNECT_ERROR');
      assert.ok(refusal.startsWith('44/nope,'), refusal);
      assert.deepEqual(JSON.parse(refusal.slice('44/nope,'.length)), { message: 'Invalid namespace' });
      ws.send(`40${JSON.stringify({ token: mint() })}`);
      const ok = await until(() => inbox.find((m) => m.startsWith('40')), 'CONNECT to /');
      assert.equal(typeof JSON.parse(ok.slice(2)).sid, 'string');
      const ch = uniq();
      ws.send(`421${JSON.stringify(['join', ch])}`);
      const a = await until(() => inbox.find((m) => m.startsWith('431[')), 'the join ack');
      assert.deepEqual(JSON.parse(a.slice(3)), [{ ok: true, channel: ch, members: 1 }]);
    } finally {
      ws.close();
    }
  });
});
