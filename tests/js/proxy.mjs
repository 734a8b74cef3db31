// A TCP proxy between test clients and a gateway, so a test can break connections the way a
// network does: `cutAll()` resets every connection (an RST both ways, no websocket close frame,
// no Socket.IO DISCONNECT), `pause()` refuses or holds new connections so a client stays offline
// as long as the test wants, and `retarget(port)` sends new connections to another instance.
//
//   const proxy = await startProxy(srv.port);
//   const s = await connect(srv, { url: proxy.url, reconnection: true });
//   proxy.pause(); proxy.cutAll(); ...; proxy.resume();
import net from 'node:net';

const HOST = '127.0.0.1';

/** Ends a socket with an RST when it has a TCP handle, else just destroys it. */
function reset(sock) {
  try {
    if (typeof sock.resetAndDestroy === 'function' && sock._handle) sock.resetAndDestroy();
    else sock.destroy();
  } catch {
    sock.destroy();
  }
}

/**
 * Start a proxy on an ephemeral port of 127.0.0.1 forwarding to `targetPort` there.
 * Resolves with { port, url, retarget, cutAll, pause, resume, close, open, accepted, refused, bytes }.
 */
export async function startProxy(targetPort) {
  let target = targetPort;
  let mode = 'open'; // 'open' | 'refuse' | 'hold'
  let resumeTimer = null;
  const pairs = new Set(); // { client, upstream } being forwarded
  const held = new Set(); // accepted while holding: not read from until resume()
  const stats = { accepted: 0, refused: 0, up: 0, down: 0 };

  function forward(client) {
    const upstream = net.connect(target, HOST);
    const pair = { client, upstream };
    pairs.add(pair);
    // An error on one side resets the other, so the peer sees what a broken network shows it.
    client.on('error', () => reset(upstream));
    upstream.on('error', () => reset(client));
    client.on('close', () => { pairs.delete(pair); upstream.destroy(); });
    upstream.on('close', () => { pairs.delete(pair); client.destroy(); });
    client.on('data', (d) => { stats.up += d.length; });
    upstream.on('data', (d) => { stats.down += d.length; });
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  }

  const server = net.createServer({ pauseOnConnect: true, noDelay: true }, (client) => {
    stats.accepted += 1;
    client.setNoDelay(true);
    if (mode === 'refuse') {
      stats.refused += 1;
      client.on('error', () => {});
      reset(client);
      return;
    }
    if (mode === 'hold') {
      held.add(client);
      client.on('error', () => {});
      client.on('close', () => held.delete(client));
      return;
    }
    forward(client);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => { server.off('error', reject); resolve(); });
  });
  const { port } = server.address();

  const proxy = {
    port,
    url: `http://${HOST}:${port}`,
    get target() { return target; },
    /** Connections being forwarded now. */
    get open() { return pairs.size; },
    get accepted() { return stats.accepted; },
    get refused() { return stats.refused; },
    /** Bytes forwarded so far from clients to the server (`up`) and back (`down`). */
    get bytes() { return { up: stats.up, down: stats.down }; },

    /** New connections go to `newPort` from now on; the open ones stay where they are. */
    retarget(newPort) { target = newPort; },

    /** Reset every open (and held) connection at once; returns how many were cut. */
    cutAll() {
      let n = 0;
      for (const { client, upstream } of [...pairs]) { reset(client); reset(upstream); n += 1; }
      pairs.clear();
      for (const c of [...held]) { reset(c); n += 1; }
      held.clear();
      return n;
    },

    /**
     * Stop forwarding new connections: `refuse` (default) resets each as it arrives, `hold`
     * accepts it and forwards it only on resume(). With `ms`, resumes by itself after that long.
     */
    pause({ hold = false, ms } = {}) {
      mode = hold ? 'hold' : 'refuse';
      if (resumeTimer) { clearTimeout(resumeTimer); resumeTimer = null; }
      if (ms !== undefined) resumeTimer = setTimeout(() => proxy.resume(), ms);
    },

    /** Forward new connections again (and the held ones now). */
    resume() {
      if (resumeTimer) { clearTimeout(resumeTimer); resumeTimer = null; }
      mode = 'open';
      for (const c of [...held]) { held.delete(c); if (!c.destroyed) forward(c); }
    },

    /** Cut everything and stop listening. */
    async close() {
      if (resumeTimer) { clearTimeout(resumeTimer); resumeTimer = null; }
      proxy.cutAll();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
  return proxy;
}
