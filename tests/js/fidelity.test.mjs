// Payloads relayed exactly as sent (issue 12): the JSON text of `data` reaches every recipient
// byte for byte — key order, number spelling (`1.50`, `12345678901234567890123`, `-0`, `1e400`),
// string escapes, whitespace — through a membership, filtered and unfiltered subscriptions, a
// direct message, a REST broadcast, binary attachments, and two instances through Redis.
//
// Publisher and recipients are raw Engine.IO/Socket.IO clients over `ws`, so the text the server
// gets is exactly the text written here and the frames compared are exactly what it sent.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import WebSocket from 'ws';
import { startServer, mint, uniq, uniqUser, until, ARRIVE_MS } from './fixture.mjs';

const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';

/** Keys out of order, numbers a re-encoder would respell, escapes, nesting, a space. */
const DATA = '{"order":{"z":1,"a":[[1.50,-0,1e400,-0.0,1E+2],{"k":[]},[[["deep"]]]]},'
  + '"n":12345678901234567890123,"s":"\\u00e9\\/\\n\\"\\ud83d\\ude00","t":true, "u":null}';

/** A raw client: connects with `token`, records every text frame and binary frame it gets. */
async function rawClient(srv, token) {
  const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/socket.io/?EIO=4&transport=websocket`);
  const inbox = [];
  ws.on('message', (buf, isBinary) => {
    if (isBinary) { inbox.push(Buffer.from(buf)); return; }
    const text = buf.toString();
    if (text === '2') ws.send('3');
    else inbox.push(text);
  });
  ws.on('error', () => {});
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  const take = async (pred, what) => {
    let i = -1;
    await until(() => (i = inbox.findIndex((m) => typeof m === 'string' && pred(m))) >= 0, what, ARRIVE_MS);
    return inbox.splice(i, 1)[0];
  };
  await take((m) => m.startsWith('0'), 'the Engine.IO open packet');
  ws.send(`40${JSON.stringify({ token, recover: false })}`);
  const conn = await take((m) => m.startsWith('40') || m.startsWith('44'), 'the CONNECT answer');
  assert.ok(conn.startsWith('40'), `CONNECT answered ${conn}`);
  let ackId = 0;
  const c = {
    ws,
    inbox,
    sid: JSON.parse(conn.slice(2)).sid,
    take,
    /** Sends `42<id>[event,<argText>]` with argText as given, and resolves with the ack's argument. */
    async emitText(event, argText) {
      ackId += 1;
      const id = ackId;
      ws.send(`42${id}[${JSON.stringify(event)},${argText}]`);
      const a = await take((m) => m.startsWith(`43${id}[`), `the ack of ${event}`);
      return JSON.parse(a.slice(2 + String(id).length))[0];
    },
    emit(event, arg) { return this.emitText(event, JSON.stringify(arg)); },
    /** The next `event` frame whose event name is `name`. */
    event(name) {
      return take((m) => /^4[25]/.test(m) && m.includes(`"event":${JSON.stringify(name)}`), `an event "${name}" for ${this.sid}`);
    },
    close() { ws.close(); },
  };
  return c;
}

/** The text between `"data":` and `,"from":` of a RealtimeEvent frame. */
function dataText(frame) {
  const start = frame.indexOf(',"data":');
  const end = frame.lastIndexOf(',"from":');
  assert.ok(start > 0 && end > start, `a RealtimeEvent frame: ${frame}`);
  return frame.slice(start + ',"data":'.length, end);
}

function assertVerbatim(frame, what) {
  assert.equal(dataText(frame), DATA, `${what}: data relayed byte for byte; frame ${frame}`);
}

const publishArg = (ch, event) => `{"channel":${JSON.stringify(ch)},"event":${JSON.stringify(event)},"data":${DATA}}`;

async function broadcast(srv, ch, event) {
  const body = `{"data":${DATA},"event":${JSON.stringify(event)},"channel":${JSON.stringify(ch)}}`;
  const r = await fetch(`${srv.url}/api/socket/broadcast`, {
    method: 'POST',
    headers: { authorization: `Bearer ${mint({ role: 'admin' })}`, 'content-type': 'application/json' },
    body,
  });
  assert.equal(r.status, 202, await r.text());
}

describe('data is relayed exactly as sent: one instance', () => {
  let srv;
  const clients = [];
  const client = async (sub) => { const c = await rawClient(srv, mint({ sub: sub ?? uniqUser('raw') })); clients.push(c); return c; };
  before(async () => { srv = await startServer({ shards: 2 }); });
  after(async () => { for (const c of clients) c.close(); await srv?.stop(); });

  it('through a channel membership, the publisher included', async () => {
    const ch = uniq('fid');
    const [pub, member] = [await client(), await client()];
    for (const c of [pub, member]) assert.equal((await c.emit('join', ch)).ok, true);
    const res = await pub.emitText('publish', publishArg(ch, 'm'));
    assert.equal(res.ok, true, JSON.stringify(res));
    assertVerbatim(await member.event('m'), 'member');
    assertVerbatim(await pub.event('m'), 'publisher (echo)');
    // An omitted data is relayed as null.
    assert.equal((await pub.emit('publish', { channel: ch, event: 'none' })).ok, true);
    assert.equal(dataText(await member.event('none')), 'null');
  });

  it('through a subscription filtered on fields of data, and an unfiltered one', async () => {
    const ch = uniq('fidsub');
    const [pub, sub] = [await client(), await client()];
    const filtered = await sub.emit('subscribe', {
      topic: `${ch.split(':')[0]}:*`,
      filter: { event: 'm', where: { 'order.a.0.0': 1.5, n: 12345678901234567890123, s: 'é/\n"😀', t: true } },
    });
    assert.equal(filtered.ok, true, JSON.stringify(filtered));
    const plain = await sub.emit('subscribe', { topic: ch });
    assert.equal(plain.ok, true, JSON.stringify(plain));
    const missed = await sub.emit('subscribe', { topic: ch, filter: { where: { t: false } } });
    assert.equal(missed.ok, true);
    assert.equal((await pub.emitText('publish', publishArg(ch, 'm'))).ok, true);
    const frames = [await sub.event('m'), await sub.event('m')];
    const byId = (id) => frames.find((f) => f.endsWith(`,"subscriptionId":${JSON.stringify(id)}}]`));
    assertVerbatim(byId(filtered.subscriptionId), 'filtered subscription');
    assertVerbatim(byId(plain.subscriptionId), 'unfiltered subscription');
    // A marker published after it arrives after it: the filter that does not hold got nothing.
    assert.equal((await pub.emit('publish', { channel: ch, event: 'marker', data: 1 })).ok, true);
    await sub.event('marker');
    assert.ok(!sub.inbox.some((m) => typeof m === 'string' && m.includes(missed.subscriptionId)), 'the filter on t:false held nothing');
  });

  it('through a direct message', async () => {
    const [from, to] = [await client(), await client()];
    const res = await from.emitText('direct', `{"to":${JSON.stringify(to.sid)},"data":${DATA},"event":"dm"}`);
    assert.equal(res.ok, true, JSON.stringify(res));
    assertVerbatim(await to.event('dm'), 'direct');
  });

  it('through a REST broadcast', async () => {
    const ch = uniq('fidrest');
    const member = await client();
    assert.equal((await member.emit('join', ch)).ok, true);
    await broadcast(srv, ch, 'notice');
    assertVerbatim(await member.event('notice'), 'REST broadcast');
  });

  it('with binary attachments, whose placeholders stay in data where they were', async () => {
    const ch = uniq('fidbin');
    const [pub, member] = [await client(), await client()];
    assert.equal((await member.emit('join', ch)).ok, true);
    const data = '{"z":1.50,"file":{"_placeholder":true,"num":0},"a":12345678901234567890123}';
    const blob = crypto.randomBytes(300);
    pub.ws.send(`451-7["publish",{"channel":${JSON.stringify(ch)},"event":"bin","data":${data}}]`);
    pub.ws.send(blob);
    const ackFrame = await pub.take((m) => m.startsWith('437['), 'the ack of the binary publish');
    assert.equal(JSON.parse(ackFrame.slice(3))[0].ok, true, ackFrame);
    const frame = await member.event('bin');
    assert.ok(frame.startsWith('451-['), frame);
    assert.equal(dataText(frame), data);
    await until(() => member.inbox.some((m) => Buffer.isBuffer(m)), 'the attachment');
    assert.deepEqual(member.inbox.find((m) => Buffer.isBuffer(m)), blob);
  });

});

describe('data is relayed exactly as sent: two instances through Redis', () => {
  const prefix = `fid${crypto.randomBytes(4).toString('hex')}`;
  const nodes = [];
  const clients = [];
  before(async () => {
    for (const id of ['fa', 'fb']) {
      nodes.push(await startServer({
        shards: 2,
        extraArgs: ['--redis-url', REDIS_URL, '--redis-prefix', prefix, '--instance-id', `${id}${crypto.randomBytes(3).toString('hex')}`],
      }));
    }
    for (const n of nodes) {
      await until(async () => (await fetch(`${n.url}/readyz`)).status === 200, 'instance ready');
    }
  });
  after(async () => {
    for (const c of clients) c.close();
    await Promise.all(nodes.map((n) => n.stop()));
  });

  it('membership, filtered and unfiltered subscriptions, direct and REST broadcast cross instances verbatim', async () => {
    const [A, B] = nodes;
    const pub = await rawClient(A, mint({ sub: uniqUser('ra') }));
    const far = await rawClient(B, mint({ sub: uniqUser('rb') }));
    clients.push(pub, far);
    const ch = uniq('fidcl');
    assert.equal((await far.emit('join', ch)).ok, true);
    const filtered = await far.emit('subscribe', { topic: ch, filter: { where: { n: 12345678901234567890123, 'order.z': 1 } } });
    const plain = await far.emit('subscribe', { topic: ch });
    assert.equal(filtered.ok && plain.ok, true);

    assert.equal((await pub.emitText('publish', publishArg(ch, 'm'))).ok, true);
    const frames = [await far.event('m'), await far.event('m'), await far.event('m')];
    const sub = (id) => frames.find((f) => f.endsWith(`,"subscriptionId":${JSON.stringify(id)}}]`));
    assertVerbatim(frames.find((f) => !f.includes('"subscriptionId"')), 'member on the other instance');
    assertVerbatim(sub(filtered.subscriptionId), 'filtered subscription on the other instance');
    assertVerbatim(sub(plain.subscriptionId), 'unfiltered subscription on the other instance');

    const res = await pub.emitText('direct', `{"event":"dm","data":${DATA},"to":${JSON.stringify(far.sid)}}`);
    assert.equal(res.ok, true, JSON.stringify(res));
    assertVerbatim(await far.event('dm'), 'direct to the other instance');

    await broadcast(A, ch, 'notice');
    assertVerbatim(await far.event('notice'), 'REST broadcast to the other instance');
  });
});
