// The README's worst case, measured: everything one authenticated connection can make the node
// hold with the default limits, at once — the most channels with the longest names, the most
// subscriptions with the largest filters, a send queue filled up to its byte bound by a reader
// that stopped reading, and a websocket message of almost --max-payload left unfinished. The
// server's RSS growth must stay within the README's formula; a witness on the same shard is
// still served throughout.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startServer, connect, ack, uniq, until, sleep } from './fixture.mjs';
import { rssKiB, witness, wsFrame, rawTcpSio, sessions, metrics, metricSum } from './raw.mjs';

/** Peak resident set (VmHWM) of a process, KiB. */
function peakKiB(pid) {
  return Number(/VmHWM:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
}
const slowConsumers = async (srv) => metricSum(await metrics(srv), 'socket_gateway_slow_consumer_disconnects_total');

const KiB = 1024;
const MiB = 1024 * KiB;
// The defaults this test relies on (see the README's limits table).
const MAX_PAYLOAD = 1_000_000;
const SEND_QUEUE_BYTES = MiB;
const MAX_CHANNELS = 1000;
const FILTER_BYTES = 4096;
// The README's per-connection bound: a session and socket of a few KiB; inbound, the message
// being read plus the binary attachments being collected (each at most --max-payload); outbound,
// the send queue plus the batch being written (each at most the larger of --send-queue-bytes and
// one packet); per channel its name and bookkeeping; per subscription its parsed filter (at most a
// few times its 4 KiB of JSON).
const PER_CHANNEL = 1 * KiB;
const PER_SUBSCRIPTION = 4 * FILTER_BYTES;
const PACKET = MAX_PAYLOAD + KiB;
// Node-wide, not per connection, but any connection that publishes can fill it: each shard's
// recovery log of delivered frames (--recovery-log-bytes, 64 MiB), here one shard.
const RECOVERY_LOG_BYTES = 64 * MiB;
// Likewise each shard's channel history (--history-bytes, 32 MiB).
const HISTORY_BYTES = 32 * MiB;
const BOUND = 64 * KiB + 2 * MAX_PAYLOAD + 2 * Math.max(SEND_QUEUE_BYTES, PACKET)
  + MAX_CHANNELS * (PER_CHANNEL + PER_SUBSCRIPTION) + RECOVERY_LOG_BYTES + HISTORY_BYTES;

/** A filter of exactly 32 conditions and close to 4 KiB of JSON. */
function bigFilter(i) {
  const where = {};
  for (let k = 0; k < 32; k += 1) where[`f${i}.k${k}`] = 'v'.repeat(100);
  const f = { where };
  assert.ok(JSON.stringify(f).length <= FILTER_BYTES);
  return f;
}

const longName = (i) => `big:${String(i).padStart(6, '0')}:${'n'.repeat(189)}`;

describe('worst case: what one connection can make the node hold, default limits [shards=1]', () => {
  let srv;
  before(async () => {
    // Only the rate limit is lifted, so the test fills everything in seconds; it bounds time,
    // not memory.
    srv = await startServer({ shards: 1, extraArgs: ['--max-events-per-sec', '0', '--max-joins-per-sec', '0'] });
  });
  after(async () => { await srv?.stop(); });

  it('channels, subscriptions, a stalled send queue and a half-sent message stay within the formula', { timeout: 120000 }, async () => {
    const w = await witness(srv);
    const pub = await connect(srv, { transports: ['websocket'] });
    await w.roundTrip('warm-up');
    await sleep(200);
    // The server is fresh: its peak so far is about where it stands now.
    const before = Math.max(rssKiB(srv.proc.pid), peakKiB(srv.proc.pid)) * KiB;

    const c = await rawTcpSio(srv);
    let ackId = 0;
    const emit = (name, arg) => {
      ackId += 1;
      const id = ackId;
      c.send(wsFrame(0x1, `42${id}${JSON.stringify([name, arg])}`));
      return id;
    };
    const acked = (id) => c.waitText((t) => t.startsWith(`43${id}[`), `ack ${id}`);
    let last = 0;
    for (let i = 0; i < MAX_CHANNELS; i += 1) last = emit('join', longName(i));
    await acked(last);
    for (let i = 0; i < MAX_CHANNELS; i += 1) last = emit('subscribe', { topic: longName(i), filter: bigFilter(i) });
    const res = await acked(last);
    assert.match(res, /"ok":true/, 'the 1000th subscription is accepted');
    c.frames.length = 0;

    // It sends all but the last bytes of a message of --max-payload, which the server buffers.
    const partial = wsFrame(0x1, Buffer.alloc(MAX_PAYLOAD - 1, 0x61), { claimLen: MAX_PAYLOAD - 1 });
    c.send(partial.subarray(0, partial.length - 2));
    // Then it stops reading, and a publisher sends to one of its channels until it is cut as a
    // slow consumer: the kernel's socket buffers take the first megabytes (not the process's
    // memory), then its send queue fills up to the byte bound. VmHWM keeps the peak.
    c.sock.pause();
    const chunk = 'x'.repeat(100 * KiB);
    const slowBefore = await slowConsumers(srv);
    let cut = false;
    for (let i = 0; i < 400 && !cut; i += 1) {
      const r = await ack(pub, 'publish', { channel: longName(0), event: 'fill', data: chunk });
      assert.equal(r.ok, true);
      if (i % 5 === 4) cut = (await slowConsumers(srv)) > slowBefore;
    }
    assert.ok(cut, 'the reader that stopped reading is cut as a slow consumer');
    const peak = peakKiB(srv.proc.pid) * KiB - before;
    console.log(`# one connection: peak RSS +${(peak / MiB).toFixed(1)} MiB (bound ${(BOUND / MiB).toFixed(1)} MiB)`);
    assert.ok(peak <= BOUND, `peak RSS grew by ${peak} bytes, over the bound of ${BOUND}`);
    await w.roundTrip('worst case');

    c.sock.destroy();
    await until(async () => (await sessions(srv)) <= 3, 'the worst-case session is gone');
    assert.ok(rssKiB(srv.proc.pid) * KiB - before < BOUND, 'what it held is given back');
    w.close();
    pub.close();
  });
});
