// argument rules and error codes, the `error` event without an ack, precisions.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  suite, startServer, connect, ack, uniq, record, until, waitFor, isErr, closeAll, ONCE, sleep,
} from './fixture.mjs';

const RESERVED = ['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener'];

suite('errors: argument validation', (ctx) => {
  it('join/leave/members: wrong types are bad_request, bad names invalid_channel', async () => {
    const s = await connect(ctx.srv);
    for (const ev of ['join', 'leave', 'members']) {
      for (const arg of [42, null, {}, { channel: 42 }, { channel: null }, [], true, { chan: 'x' }]) {
        const res = await ack(s, ev, arg);
        assert.ok(isErr(res, 'bad_request'), `${ev} ${JSON.stringify(arg)}: ${JSON.stringify(res)}`);
      }
      for (const arg of ['', { channel: '' }, 'x'.repeat(201), 'é'.repeat(100) + 'a', 'chat:\u0000', 'chat:\u0007x', 'a\nb', 'del\u007f', 'c1\u0085', { channel: 'tab\there' }]) {
        const res = await ack(s, ev, arg);
        assert.ok(isErr(res, 'invalid_channel'), `${ev} ${JSON.stringify(arg)}: ${JSON.stringify(res)}`);
      }
    }
  });

  it('channel names of exactly 200 bytes (also multi-byte) and any printable Unicode are fine', async () => {
    const s = await connect(ctx.srv);
    for (const ch of ['x'.repeat(200), 'é'.repeat(100), '频道'.repeat(33) + 'ab', 'a', 'chat room/日本 😀 {}[]"\'', '*']) {
      const res = await ack(s, 'join', ch);
      assert.deepEqual(res, { ok: true, channel: ch, members: 1 }, `join ${JSON.stringify(ch)}`);
      const m = await ack(s, 'members', ch);
      assert.equal(m.channel, ch);
      assert.equal(m.members.length, 1);
    }
  });

  it('publish: missing/wrong fields are bad_request, bad channel invalid_channel, bad event names bad_request', async () => {
    const s = await connect(ctx.srv);
    const ch = uniq();
    const cases = [
      [null, 'bad_request'],
      ['chat:x', 'bad_request'],
      [{}, 'bad_request'],
      [{ event: 'e', data: 1 }, 'bad_request'],
      [{ channel: ch, data: 1 }, 'bad_request'],
      [{ channel: 42, event: 'e' }, 'bad_request'],
      [{ channel: ch, event: 42 }, 'bad_request'],
      [{ channel: ch, event: '' }, 'bad_request'],
      [{ channel: ch, event: 'e'.repeat(101) }, 'bad_request'],
      [{ channel: '', event: 'e' }, 'invalid_channel'],
      [{ channel: 'x'.repeat(201), event: 'e' }, 'invalid_channel'],
      [{ channel: 'a\u0001', event: 'e' }, 'invalid_channel'],
      ...RESERVED.map((event) => [{ channel: ch, event, data: 1 }, 'bad_request']),
    ];
    for (const [arg, code] of cases) {
      const res = await ack(s, 'publish', arg);
      assert.ok(isErr(res, code), `publish ${JSON.stringify(arg)}: want ${code}, got ${JSON.stringify(res)}`);
    }
    assert.equal((await ack(s, 'publish', { channel: ch, event: 'e'.repeat(100), data: 1 })).ok, true, '100-byte event name');
    assert.equal((await ack(s, 'publish', { channel: ch, event: 'error', data: 1 })).ok, true, '"error" is not reserved');
  });

  it('refused publishes are not delivered', async () => {
    const s = await connect(ctx.srv);
    const m = await connect(ctx.srv);
    const ch = uniq();
    await ack(m, 'join', ch);
    const got = record(m, 'event');
    for (const event of [...RESERVED, '', 'e'.repeat(101)]) await ack(s, 'publish', { channel: ch, event, data: 1 });
    await ack(s, 'publish', { channel: ch, event: 'marker', data: 1 });
    await until(() => got.length >= 1, 'marker');
    assert.deepEqual(got.map((e) => e.event), ['marker']);
  });

  it('direct: missing/wrong fields and reserved names are bad_request', async () => {
    const s = await connect(ctx.srv);
    const t = await connect(ctx.srv);
    const cases = [
      [null, 'bad_request'],
      [{}, 'bad_request'],
      [{ event: 'e' }, 'bad_request'],
      [{ to: 42, event: 'e' }, 'bad_request'],
      [{ to: t.id }, 'bad_request'],
      [{ to: t.id, event: '' }, 'bad_request'],
      [{ to: t.id, event: 'e'.repeat(101) }, 'bad_request'],
      ...RESERVED.map((event) => [{ to: t.id, event, data: 1 }, 'bad_request']),
    ];
    const got = record(t, 'event');
    for (const [arg, code] of cases) {
      const res = await ack(s, 'direct', arg);
      assert.ok(isErr(res, code), `direct ${JSON.stringify(arg)}: want ${code}, got ${JSON.stringify(res)}`);
    }
    await ack(s, 'direct', { to: t.id, event: 'marker' });
    await until(() => got.length >= 1, 'marker');
    assert.deepEqual(got.map((e) => e.event), ['marker']);
  });

  it('without an ack, a failure arrives as an `error` event with {code,message}', async () => {
    const s = await connect(ctx.srv);
    const errs = record(s, 'error');
    s.emit('join', 42);
    await until(() => errs.length >= 1, 'error event');
    s.emit('publish', { channel: '', event: 'e' });
    await until(() => errs.length >= 2, 'second error event');
    s.emit('direct', { to: 'nobody-here', event: 'e' });
    await until(() => errs.length >= 3, 'third error event');
    s.emit('unsubscribe', { subscriptionId: 'nope' });
    await until(() => errs.length >= 4, 'fourth error event');
    assert.deepEqual(errs.map((e) => e.code), ['bad_request', 'invalid_channel', 'not_found', 'unknown_subscription']);
    for (const e of errs) {
      assert.deepEqual(Object.keys(e).sort(), ['code', 'message']);
      assert.equal(typeof e.message, 'string');
    }
    // successes without an ack send nothing; failures with an ack send no `error` event
    s.emit('join', uniq());
    assert.ok(isErr(await ack(s, 'join', 42), 'bad_request'));
    await ack(s, 'members', uniq());
    assert.equal(errs.length, 4, JSON.stringify(errs));
    assert.ok(s.connected);
  });

  it('the socket stays usable after errors', async () => {
    const s = await connect(ctx.srv);
    for (let i = 0; i < 20; i += 1) await ack(s, 'join', null);
    const ch = uniq();
    assert.deepEqual(await ack(s, 'join', ch), { ok: true, channel: ch, members: 1 });
  });
}, { configs: [ONCE] });

describe('errors: payload over --max-payload', () => {
  let srv;
  before(async () => { srv = await startServer({ shards: 1, maxPayload: 20000 }); });
  after(async () => { await srv?.stop(); });
  afterEach(() => closeAll(srv));

  for (const transports of [['websocket'], ['polling']]) {
    it(`an event bigger than maxPayload is refused (too_large) or closes the connection, and is not relayed (${transports})`, async () => {
      const ch = uniq();
      const m = await connect(srv, { transports: ['websocket'] });
      await ack(m, 'join', ch);
      const got = record(m, 'event');
      const s = await connect(srv, { transports });
      // a normal event is fine
      assert.equal((await ack(s, 'publish', { channel: ch, event: 'small', data: 'x'.repeat(1000) })).ok, true);
      await until(() => got.length >= 1, 'small event');
      const closed = waitFor(s, 'disconnect').then(() => 'closed');
      const acked = s.timeout(15000).emitWithAck('publish', { channel: ch, event: 'big', data: 'y'.repeat(100000) })
        .then((res) => res, () => 'no-ack');
      const outcome = await Promise.race([closed, acked.then((r) => (r === 'no-ack' ? closed : r))]);
      if (outcome !== 'closed') {
        assert.ok(isErr(outcome, 'too_large'), `big publish: ${JSON.stringify(outcome)}`);
      }
      // the member still works and never got the big event
      const p = await connect(srv);
      await ack(p, 'publish', { channel: ch, event: 'marker', data: 1 });
      await until(() => got.some((e) => e.event === 'marker'), 'marker');
      assert.deepEqual(got.map((e) => e.event), ['small', 'marker']);
      await sleep(0);
    });
  }
});
