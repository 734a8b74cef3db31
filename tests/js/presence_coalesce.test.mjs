// Coalescing: presence waiting for a socket whose send queue is backing up is coalesced (a join
// and a leave of one member cancel), so presence alone never cuts a socket as a slow consumer, and
// what it finally reads gives the channel's true membership.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, connect, ack, mint, uniq, until, sleep, closeAll } from './fixture.mjs';
import { rawClient } from './raw.mjs';

const OTHERS = 200;

describe('presence to a backed-up socket [shards=1, --send-queue 128]', () => {
  let srv;
  before(async () => {
    srv = await startServer({
      shards: 1,
      sendQueue: 128,
      pingInterval: 120000,
      pingTimeout: 120000,
      extraArgs: ['--send-queue-bytes', String(64 << 20)],
    });
  });
  after(async () => { closeAll(srv); await srv?.stop(); });

  it('is coalesced, never cuts the socket, and ends in the true membership', { timeout: 120000 }, async () => {
    const ch = uniq('co');
    const slow = await rawClient(srv, mint({ sub: 'slowpoke' }));
    assert.equal((await slow.emitAck('join', ch)).ok, true);
    slow.ws._socket.pause();

    // fill the kernel's buffers and part of the queue with events (12.8 MB, 64 events: more
    // than the socket buffers take, fewer than the queue's 128)
    const pub = await connect(srv, { transports: ['websocket'] });
    const payload = 'e'.repeat(200_000);
    for (let i = 0; i < 64; i += 1) {
      assert.equal((await ack(pub, 'publish', { channel: ch, event: 'fill', data: { i, payload } })).ok, true);
    }

    // 200 members join, all leave, half join again: 500 changes, far past the queue's bound
    const others = [];
    for (let i = 0; i < OTHERS; i += 1) others.push(await connect(srv, { transports: ['websocket'] }));
    const all = (f) => Promise.all(others.map(f));
    assert.ok((await all((s) => ack(s, 'join', ch))).every((r) => r.ok));
    await sleep(1100); // the per-member gate: one join and one leave per second take effect at once
    assert.ok((await all((s) => ack(s, 'leave', ch))).every((r) => r.ok));
    await sleep(1100);
    const stay = new Set(others.filter((_, i) => i % 2 === 0).map((s) => s.id));
    assert.ok((await all((s) => (stay.has(s.id) ? ack(s, 'join', ch) : { ok: true }))).every((r) => r.ok));
    await sleep(500);
    assert.equal(slow.closed, null, 'the backed-up socket is still connected');

    // read again: everything arrives, then a new event
    slow.ws._socket.resume();
    assert.equal((await ack(pub, 'publish', { channel: ch, event: 'last', data: {} })).ok, true);
    await until(() => slow.inbox.some((m) => m?.includes('"event":"last"')), 'the last event reaches the slow socket', 30000);
    assert.equal(slow.closed, null);
    const frames = slow.inbox.filter((m) => m?.startsWith('42["presence"')).map((m) => JSON.parse(m.slice(2))[1]);
    const fills = slow.inbox.filter((m) => m?.includes('"event":"fill"'));
    assert.equal(fills.length, 64, 'every event arrived');
    const last = new Map();
    for (const p of frames) last.set(p.member.socketId, p.type);
    for (const s of others) {
      const seen = last.get(s.id);
      if (stay.has(s.id)) assert.equal(seen, 'join', `${s.id} is a member: last presence seen ${seen}`);
      else assert.ok(seen === undefined || seen === 'leave', `${s.id} left: last presence seen ${seen}`);
    }
    // coalesced: fewer frames than changes (without coalescing all 500 would arrive, or the socket
    // would have been cut at 128)
    console.log("FRAMES", frames.length);
    assert.ok(frames.length < 350, `presence frames delivered: ${frames.length} of 500 changes`);
    const m = await slow.emitAck('members', ch);
    assert.equal(m.members.length, 1 + stay.size);
  });
});
