// permessage-deflate (--ws-compression): the real socket.io-client on Node's `ws` transport and
// real headless Chromium negotiate it, send compressed frames and receive compressed frames that
// decode to exactly what was published (members and subscriptions, with and without recovery
// offsets); a client that does not offer it gets plain frames of the same publish; a compressed
// message that inflates past --max-payload is refused as too_large. Each client goes through its
// own counting proxy, so the bytes on the wire show that frames really were compressed.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { startServer, connect, ack, mint, uniq, waitFor, closeAll, ARRIVE_MS } from './fixture.mjs';
import { startProxy } from './proxy.mjs';
import { rawClient } from './raw.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const MAX_PAYLOAD = 100_000;
// Chat-like JSON: compresses well, as real chat traffic does.
const bigData = () => ({
  messages: Array.from({ length: 150 }, (_, i) => ({ user: `user-${i % 7}`, text: `hello everyone, message number ${i}`, ts: 1700000000000 + i })),
});

for (const recovery of [true, false]) {
  describe(`permessage-deflate, socket.io-client on ws [recovery ${recovery ? 'on' : 'off'}]`, () => {
    let srv;
    const proxies = [];
    before(async () => {
      srv = await startServer({
        shards: 2,
        maxPayload: MAX_PAYLOAD,
        transports: ['websocket'],
        extraArgs: ['--ws-compression', 'true', '--ws-compression-threshold', '64',
          ...(recovery ? [] : ['--recovery-window', '0'])],
      });
    });
    after(async () => {
      closeAll(srv);
      for (const p of proxies) await p.close();
      await srv?.stop();
    });

    async function client(sub, deflate) {
      const proxy = await startProxy(srv.port);
      proxies.push(proxy);
      const s = await connect(srv, { sub, url: proxy.url, perMessageDeflate: deflate ? { threshold: 0 } : false });
      return { s, proxy };
    }
    const extensions = (s) => s.io.engine.transport.ws.extensions;

    it('compressed frames both ways decode to the published event, for members and subscriptions alike', async () => {
      const ch = uniq('z');
      const pub = await client('pub', true);
      const members = [await client('m1', true), await client('m2', true)];
      const sub = await client('sub', true);
      const plain = await client('plain', false);
      assert.match(extensions(pub.s), /permessage-deflate/);
      assert.equal(extensions(plain.s), '');
      for (const c of [pub, ...members, plain]) assert.equal((await ack(c.s, 'join', ch)).ok, true);
      const { subscriptionId } = await ack(sub.s, 'subscribe', { topic: ch });
      const data = bigData();
      const size = JSON.stringify(data).length;
      const before = [pub, ...members, sub, plain].map((c) => c.proxy.bytes);
      const got = [...members, plain].map((c) => waitFor(c.s, 'event', (e) => e.event === 'chat'));
      const gotSub = waitFor(sub.s, 'event', (e) => e.event === 'chat');
      const res = await ack(pub.s, 'publish', { channel: ch, event: 'chat', data });
      assert.equal(res.ok, true);
      for (const e of await Promise.all(got)) assert.deepEqual(e.data, data);
      const se = await gotSub;
      assert.deepEqual(se.data, data);
      assert.equal(se.subscriptionId, subscriptionId);
      const after = [pub, ...members, sub, plain].map((c) => c.proxy.bytes);
      const down = after.map((a, i) => a.down - before[i].down);
      const up = after[0].up - before[0].up;
      // The publisher's frame went compressed, and so did every compressed recipient's.
      assert.ok(up < size / 3, `publish sent ${up} bytes for ${size} bytes of data`);
      for (const i of [1, 2, 3]) assert.ok(down[i] < size / 3, `recipient ${i} got ${down[i]} bytes for ${size}`);
      // The client without the extension got the same event in plain frames.
      assert.ok(down[4] > size, `plain recipient got ${down[4]} bytes for ${size}`);
      // Small frames (acks, short events) go as they are and still arrive.
      const small = waitFor(members[0].s, 'event', (e) => e.event === 'tiny');
      assert.equal((await ack(pub.s, 'publish', { channel: ch, event: 'tiny', data: 1 })).ok, true);
      assert.equal((await small).data, 1);
    });

    it('a compressed message that inflates past --max-payload is refused as too_large', async () => {
      const proxy = await startProxy(srv.port);
      proxies.push(proxy);
      const c = await rawClient(srv, mint(), { port: proxy.port, wsOptions: { perMessageDeflate: { threshold: 0 } } });
      assert.match(c.ws.extensions, /permessage-deflate/);
      const up0 = proxy.bytes.up;
      c.ws.send(`42${JSON.stringify(['publish', { channel: uniq(), event: 'bomb', data: 'a'.repeat(MAX_PAYLOAD * 20) }])}`);
      const err = await c.next((m) => m.startsWith('42["error"'));
      assert.equal(JSON.parse(err.slice(2))[1].code, 'too_large');
      const closed = await c.whenClosed();
      assert.equal(closed.code, 1009);
      const sent = proxy.bytes.up - up0;
      assert.ok(sent < MAX_PAYLOAD / 10, `the bomb was ${sent} bytes on the wire`);
    });

    it('before its CONNECT a session may not inflate more than it could send plain (32 KiB)', async () => {
      const c = await rawClient(srv, mint(), { connectNsp: false, wsOptions: { perMessageDeflate: { threshold: 0 } } });
      assert.match(c.ws.extensions, /permessage-deflate/);
      c.ws.send(`40${JSON.stringify({ token: mint(), pad: 'p'.repeat(64 * 1024) })}`);
      const closed = await c.whenClosed();
      assert.equal(closed.code, 1009);
    });
  });
}

describe('permessage-deflate in headless Chromium', () => {
  let srv;
  let browser;
  let proxy;
  before(async () => {
    srv = await startServer({ shards: 2, extraArgs: ['--ws-compression', 'true'] });
    proxy = await startProxy(srv.port);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
  });
  after(async () => {
    await browser?.close();
    await proxy?.close();
    closeAll(srv);
    await srv?.stop();
  });

  it('a browser websocket negotiates it, publishes compressed and receives compressed frames that decode exactly', async () => {
    const ch = uniq('zb');
    const data = bigData();
    const size = JSON.stringify(data).length;
    const listener = await connect(srv, { sub: 'node', transports: ['websocket'] });
    await ack(listener, 'join', ch);
    const heard = waitFor(listener, 'event', (e) => e.event === 'chat');
    const page = await browser.newPage();
    await page.goto(`${srv.url}/healthz`);
    const wsUrl = `ws://127.0.0.1:${proxy.port}/socket.io/?EIO=4&transport=websocket`;
    const result = await page.evaluate(async ({ wsUrl, token, ch, data, timeout }) => {
      const ws = new WebSocket(wsUrl);
      const inbox = [];
      let wake = () => {};
      ws.onmessage = (m) => {
        if (m.data === '2') { ws.send('3'); return; }
        inbox.push(m.data);
        wake();
      };
      const next = async (pred) => {
        const end = Date.now() + timeout;
        for (;;) {
          const i = inbox.findIndex(pred);
          if (i >= 0) return inbox.splice(i, 1)[0];
          if (Date.now() > end) throw new Error(`nothing matching; inbox ${inbox.slice(0, 3)}`);
          await new Promise((r) => { wake = r; setTimeout(r, 50); });
        }
      };
      await new Promise((res, rej) => { ws.onopen = res; ws.onerror = rej; });
      await next((m) => m.startsWith('0'));
      ws.send(`40${JSON.stringify({ token })}`);
      await next((m) => m.startsWith('40'));
      ws.send(`421${JSON.stringify(['join', ch])}`);
      await next((m) => m.startsWith('431'));
      ws.send(`422${JSON.stringify(['publish', { channel: ch, event: 'chat', data }])}`);
      const ackd = JSON.parse((await next((m) => m.startsWith('432'))).slice(3))[0];
      const ev = JSON.parse((await next((m) => m.startsWith('42["event"'))).slice(2))[1];
      const extensions = ws.extensions;
      ws.close();
      return { extensions, ackd, ev };
    }, { wsUrl, token: mint({ sub: 'browser' }), ch, data, timeout: ARRIVE_MS });
    await page.close();
    assert.match(result.extensions, /permessage-deflate/);
    assert.equal(result.ackd.ok, true);
    assert.deepEqual(result.ev.data, data);
    assert.deepEqual((await heard).data, data);
    const { up, down } = proxy.bytes;
    assert.ok(up < size / 3, `the browser sent ${up} bytes for ${size} bytes of data`);
    assert.ok(down < size / 3, `the browser got ${down} bytes for ${size} bytes of data`);
  });
});
