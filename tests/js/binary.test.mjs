// binary attachments relayed intact (BINARY_EVENT in, binary in `data` out).
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { suite, connect, ack, uniq, waitFor, record, until, checkEvent, CONFIGS } from './fixture.mjs';

const bytes = (n, seed) => Buffer.from([...Array(n).keys()].map((i) => (i * 31 + seed) & 0xff));

suite('binary', (ctx) => {
  it('a publish with Buffers in data reaches members with the bytes intact', async () => {
    const ch = uniq('bin');
    const m = await connect(ctx.srv);
    const p = await connect(ctx.srv);
    await ack(m, 'join', ch);
    const got = waitFor(m, 'event');
    const data = { name: 'file.bin', blob: bytes(1000, 7), parts: [bytes(3, 1), 'text', { inner: bytes(256, 200) }], empty: Buffer.alloc(0) };
    const res = await ack(p, 'publish', { channel: ch, event: 'upload', data });
    assert.equal(res.ok, true);
    const e = checkEvent(await got, { channel: ch, event: 'upload' });
    assert.equal(e.data.name, 'file.bin');
    assert.ok(Buffer.isBuffer(e.data.blob) || e.data.blob instanceof ArrayBuffer, 'blob arrives as binary');
    assert.ok(Buffer.from(e.data.blob).equals(data.blob), 'blob bytes');
    assert.ok(Buffer.from(e.data.parts[0]).equals(data.parts[0]));
    assert.equal(e.data.parts[1], 'text');
    assert.ok(Buffer.from(e.data.parts[2].inner).equals(data.parts[2].inner));
    assert.equal(Buffer.from(e.data.empty).length, 0);
  });

  it('data that is a bare Buffer, by publish, subscription and direct', async () => {
    const ch = uniq('bin');
    const m = await connect(ctx.srv);
    const p = await connect(ctx.srv);
    await ack(m, 'join', ch);
    const { subscriptionId } = await ack(m, 'subscribe', { topic: ch });
    const got = record(m, 'event');
    const buf = bytes(70000, 3);
    await ack(p, 'publish', { channel: ch, event: 'raw', data: buf });
    await ack(p, 'direct', { to: m.id, event: 'rawdm', data: buf });
    await until(() => got.length >= 3, 'three deliveries');
    for (const e of got) assert.ok(Buffer.from(e.data).equals(buf), `${e.event} bytes intact`);
    assert.deepEqual(got.map((e) => e.subscriptionId ?? e.event).sort(), ['raw', 'rawdm', subscriptionId].sort());
  });

  it('binary and text events interleave in publish order', async () => {
    const ch = uniq('bin');
    const m = await connect(ctx.srv);
    const p = await connect(ctx.srv);
    await ack(m, 'join', ch);
    const got = record(m, 'event');
    for (let i = 0; i < 40; i += 1) {
      p.emit('publish', { channel: ch, event: 'mix', data: i % 2 ? { i, b: bytes(10, i) } : { i } });
    }
    await until(() => got.length >= 40, 'forty events');
    assert.deepEqual(got.map((e) => e.data.i), [...Array(40).keys()]);
    for (const e of got) if (e.data.i % 2) assert.ok(Buffer.from(e.data.b).equals(bytes(10, e.data.i)));
  });
}, { configs: [CONFIGS[0], CONFIGS[3]] });
