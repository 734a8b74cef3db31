// Delivery: a socket too slow for its bounded send queue is disconnected; others keep receiving.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startServer, connect, ack, mint, uniq, record, until, closeAll } from './fixture.mjs';

/** A raw Engine.IO/Socket.IO client over `ws`; returns { ws, sid, emitAck(event, arg) }. */
export async function rawClient(srv, token) {
  const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/socket.io/?EIO=4&transport=websocket`);
  const inbox = [];
  const waiters = [];
  ws.on('message', (buf, isBinary) => {
    const text = isBinary ? null : buf.toString();
    if (text === '2') { ws.send('3'); return; }
    inbox.push(text);
    for (const w of waiters.splice(0)) w();
  });
  const next = async (pred) => {
    const deadline = Date.now() + 10000;
    for (;;) {
      const i = inbox.findIndex((m) => m !== null && pred(m));
      if (i >= 0) return inbox.splice(i, 1)[0];
      if (Date.now() > deadline) throw new Error(`raw client: nothing matching; inbox ${JSON.stringify(inbox.slice(0, 5))}`);
      await new Promise((r) => { waiters.push(r); setTimeout(r, 100); });
    }
  };
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  const open = JSON.parse((await next((m) => m.startsWith('0'))).slice(1));
  assert.equal(typeof open.sid, 'string');
  ws.send(`40${JSON.stringify({ token })}`);
  const conn = await next((m) => m.startsWith('40') || m.startsWith('44'));
  assert.ok(conn.startsWith('40'), `CONNECT answered ${conn}`);
  const sid = JSON.parse(conn.slice(2)).sid;
  let ackId = 0;
  const emitAck = async (event, arg) => {
    ackId += 1;
    const id = ackId;
    ws.send(`42${id}${JSON.stringify([event, arg])}`);
    const a = await next((m) => m.startsWith(`43${id}[`));
    return JSON.parse(a.slice(2 + String(id).length))[0];
  };
  return { ws, sid, emitAck };
}

describe('slow consumer', () => {
  let srv;
  before(async () => { srv = await startServer({ shards: 1, sendQueue: 256, pingInterval: 120000, pingTimeout: 120000 }); });
  after(async () => { closeAll(srv); await srv?.stop(); });

  it('a socket that stops reading is disconnected while another member keeps receiving', { timeout: 120000 }, async () => {
    const ch = uniq('slow');
    const slow = await rawClient(srv, mint({ sub: 'slowpoke' }));
    const joined = await slow.emitAck('join', ch);
    assert.equal(joined.ok, true, JSON.stringify(joined));
    const good = await connect(srv, { transports: ['websocket'] });
    const goodPresence = record(good, 'presence');
    await ack(good, 'join', ch);
    const got = record(good, 'event');
    const pub = await connect(srv, { transports: ['websocket'] });

    // stop reading: the kernel buffers fill, then the server's bounded queue
    slow.ws._socket.pause();
    let wsClosed = false;
    slow.ws.on('close', () => { wsClosed = true; });

    const slowLeft = () => goodPresence.some((p) => p.type === 'leave' && p.member.socketId === slow.sid);
    const payload = 'z'.repeat(8192);
    let sent = 0;
    const max = 8000; // 64 MiB at most, far beyond any socket buffer
    while (!slowLeft() && sent < max) {
      const window = [];
      for (let i = 0; i < 20; i += 1) {
        window.push(ack(pub, 'publish', { channel: ch, event: 'flood', data: { i: sent, payload } }));
        sent += 1;
      }
      const res = await Promise.all(window);
      assert.ok(res.every((r) => r.ok === true), 'publishes succeed');
    }
    // the good member got everything, in order, and is still connected
    await until(() => got.length >= sent, () => `good member gets all ${sent}; got ${got.length}`, 30000);
    assert.equal(got.length, sent);
    for (let i = 0; i < sent; i += 1) if (got[i].data.i !== i) assert.fail(`good member: event ${i} is ${got[i].data.i}`);
    assert.ok(good.connected, 'the good member is still connected');
    // the slow socket was disconnected: its channels see it leave (while it still does not read)
    await until(slowLeft, `a presence leave for the slow socket (sent ${sent} x 8 KiB while it did not read)`, 30000);
    // the slow socket is gone from the channel, and its connection ends once we read again
    const m = await ack(good, 'members', ch);
    assert.deepEqual(m.members.map((x) => x.socketId), [good.id]);
    slow.ws._socket.resume();
    await until(() => wsClosed, 'the slow socket closes', 30000);
    // the shard still serves new work
    const late = await connect(srv, { transports: ['websocket'] });
    assert.deepEqual(await ack(late, 'join', ch), { ok: true, channel: ch, members: 2 });
  });
});
