// Shared helpers for the protocol conformance tests in this directory.
//
// The server under test is `$GATEWAY_BIN protocol-suite --listen 127.0.0.1:0`,
// which prints `socket-gateway listening on http://127.0.0.1:PORT` once ready.
// Setting PROTOCOL_SUITE_URL (e.g. http://127.0.0.1:3000) instead points the
// tests at an already running server and skips spawning one.

import { spawn } from "node:child_process";
import WebSocket from "ws";

export const PING_INTERVAL = 300;
export const PING_TIMEOUT = 200;
export const MAX_PAYLOAD = 1_000_000;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const READY_RE = /socket-gateway listening on http:\/\/([0-9.]+|\[[0-9a-f:]+\]|localhost):(\d+)/;

/**
 * Starts the protocol-suite server. Resolves to { url, wsUrl, stop() }.
 */
export async function startServer() {
  const external = process.env.PROTOCOL_SUITE_URL;
  if (external) {
    const url = external.replace(/\/+$/, "");
    return { url, wsUrl: url.replace(/^http/, "ws"), stop: async () => {} };
  }

  const bin = process.env.GATEWAY_BIN;
  if (!bin) {
    throw new Error("GATEWAY_BIN is not set (path to the socket-gateway binary)");
  }

  const child = spawn(bin, ["protocol-suite", "--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    stderr += chunk;
    if (stderr.length > 64 * 1024) stderr = stderr.slice(-32 * 1024);
  });

  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));

  const port = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`protocol-suite server did not report readiness within 20s\nstdout:\n${out}\nstderr:\n${stderr}`));
    }, 20_000);
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk) => {
      if (out === null) return; // keep draining the pipe after readiness
      out += chunk;
      const m = READY_RE.exec(out);
      if (m) {
        clearTimeout(timer);
        out = null;
        resolve(Number(m[2]));
      }
    });
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`protocol-suite server exited early (code ${code}, signal ${signal})\nstderr:\n${stderr}`));
    });
  });

  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    wsUrl: `ws://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * HTTP request helper that always consumes the body, so no connection is left
 * half-read. Network-level failures (the server resetting the connection) are
 * reported as { status: null, error } rather than thrown.
 */
export async function http(url, { method = "GET", body, tolerateNetworkError = false } = {}) {
  try {
    const res = await fetch(url, { method, body, signal: AbortSignal.timeout(5_000) });
    const text = await res.text();
    return { status: res.status, text, headers: res.headers };
  } catch (error) {
    if (tolerateNetworkError) return { status: null, text: null, error };
    throw error;
  }
}

/** Parses an Engine.IO open packet ("0{...}") and checks its exact shape. */
export function parseOpenPacket(assert, data, expectedUpgrades) {
  assert.equal(typeof data, "string", "open packet must be a text frame");
  assert.ok(data.startsWith("0"), `expected an open packet, got ${JSON.stringify(data)}`);
  const value = JSON.parse(data.slice(1));
  assert.deepEqual(Object.keys(value).sort(), ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]);
  assert.equal(typeof value.sid, "string");
  assert.ok(value.sid.length > 0, "sid must not be empty");
  assert.deepEqual(value.upgrades, expectedUpgrades);
  assert.equal(value.pingInterval, PING_INTERVAL);
  assert.equal(value.pingTimeout, PING_TIMEOUT);
  assert.equal(value.maxPayload, MAX_PAYLOAD);
  return value;
}

const liveClients = new Set();

/**
 * A WebSocket client that queues every frame it receives, so that no frame
 * is lost between two awaits. Text frames are strings, binary frames Buffers.
 */
export class WsClient {
  constructor(url, { autoPong = false } = {}) {
    this.url = url;
    this.autoPong = autoPong;
    this.queue = [];
    this.waiters = [];
    this.errors = [];
    this.everOpened = false;
    this.closeInfo = null;
    this.ws = new WebSocket(url);
    liveClients.add(this);

    this.opened = new Promise((resolve, reject) => {
      this.ws.once("open", () => {
        this.everOpened = true;
        resolve();
      });
      this.ws.once("close", () => reject(new Error(`WebSocket closed before opening (${this.describeErrors()})`)));
    });
    this.opened.catch(() => {});

    this.ws.on("error", (err) => this.errors.push(err));
    this.ws.on("message", (data, isBinary) => {
      const frame = isBinary ? Buffer.from(data) : data.toString("utf8");
      if (this.autoPong && frame === "2") {
        this.send("3");
        return;
      }
      const waiter = this.waiters.shift();
      if (waiter) waiter.resolve(frame);
      else this.queue.push(frame);
    });
    this.closed = new Promise((resolve) => {
      this.ws.once("close", (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        liveClients.delete(this);
        for (const w of this.waiters.splice(0)) {
          w.reject(new Error(`WebSocket closed (code ${code}) while waiting for a frame`));
        }
        resolve(this.closeInfo);
      });
    });
  }

  describeErrors() {
    return this.errors.map((e) => e.message).join("; ") || "no error";
  }

  /** HTTP status of a rejected upgrade, if the server answered with a non-101 response. */
  get rejectedStatus() {
    for (const e of this.errors) {
      const m = /Unexpected server response: (\d+)/.exec(e.message);
      if (m) return Number(m[1]);
    }
    return null;
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(data) {
    this.ws.send(data);
  }

  /** Next received frame; with skipPings, Engine.IO PING packets ("2") are dropped. */
  async next({ timeout = 3_000, skipPings = false } = {}) {
    for (;;) {
      const frame = await this.#nextRaw(timeout);
      if (skipPings && frame === "2") continue;
      return frame;
    }
  }

  /** Collects the next `count` frames (Engine.IO PINGs skipped). */
  async nextFrames(count, opts = {}) {
    const frames = [];
    while (frames.length < count) frames.push(await this.next({ ...opts, skipPings: true }));
    return frames;
  }

  #nextRaw(timeout) {
    if (this.queue.length > 0) return Promise.resolve(this.queue.shift());
    if (this.closeInfo) return Promise.reject(new Error(`WebSocket already closed (code ${this.closeInfo.code})`));
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no frame received within ${timeout} ms`));
      }, timeout);
      this.waiters.push(waiter);
    });
  }

  /** Resolves with { code, reason } once the connection is closed; rejects after `timeout`. */
  async waitClose(timeout = 3_000) {
    let timer;
    const t = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`connection not closed within ${timeout} ms`)), timeout);
    });
    try {
      return await Promise.race([this.closed, t]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Opens, reads and validates the Engine.IO handshake; returns the open packet. */
  async handshake(assert, expectedUpgrades = []) {
    await this.opened;
    return parseOpenPacket(assert, await this.next(), expectedUpgrades);
  }

  terminate() {
    this.ws.terminate();
  }
}

/** Terminates every WebSocket still open (call from afterEach). */
export function closeAllClients() {
  for (const c of liveClients) c.terminate();
  liveClients.clear();
}

/**
 * Asserts that a WebSocket connection attempt with invalid query parameters is
 * refused: the server must never send an Engine.IO open packet and the
 * connection must end. When refused at the HTTP level, the status must be 400.
 */
export async function assertWebSocketRefused(assert, url) {
  const c = new WsClient(url);
  await c.waitClose(3_000);
  assert.deepEqual(c.queue, [], `no frame expected, got ${JSON.stringify(c.queue)}`);
  if (!c.everOpened) {
    assert.equal(c.rejectedStatus, 400, `expected HTTP 400 for the refused upgrade (${c.describeErrors()})`);
  }
}
