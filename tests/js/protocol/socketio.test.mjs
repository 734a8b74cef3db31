// Socket.IO v5 protocol conformance, covering every case of the official
// socket.io-protocol test suite (test-suite/test-suite.js), rewritten for
// node:test. The server under test is `$GATEWAY_BIN protocol-suite`, whose
// /socket.io/ path runs the Socket.IO layer with the suite's handlers:
//   - on connection (main namespace "/" and "/custom"): emit "auth" with the
//     handshake auth payload ({} when none was sent);
//   - main namespace: "message" -> emit "message-back" with the same args;
//     "message-with-ack" -> acknowledge with the same args;
//   - pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1000000,
//     connectTimeout 1000 ms.

import { after, afterEach, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { PING_INTERVAL, PING_TIMEOUT, WsClient, closeAllClients, startServer } from "./harness.mjs";
import { engineIoCases } from "./eio-cases.mjs";

const T = { timeout: 10_000 };
const CONNECT_TIMEOUT = 1_000;

let srv;
const wsUrl = () => `${srv.wsUrl}/socket.io/?EIO=4&transport=websocket`;

/** Engine.IO handshake over WebSocket, PINGs answered automatically unless told otherwise. */
async function engineIoSocket({ autoPong = true } = {}) {
  const ws = new WsClient(wsUrl(), { autoPong });
  await ws.handshake(assert, []);
  return ws;
}

/** Checks a Socket.IO CONNECT answer ("40" + optional "/nsp," + {"sid": ...}). */
function assertConnectAck(frame, nspPrefix) {
  const head = `40${nspPrefix}`;
  assert.equal(typeof frame, "string");
  assert.ok(frame.startsWith(head), `expected ${head}{"sid":...}, got ${JSON.stringify(frame)}`);
  const body = JSON.parse(frame.slice(head.length));
  assert.deepEqual(Object.keys(body), ["sid"]);
  assert.equal(typeof body.sid, "string");
  assert.ok(body.sid.length > 0);
  return body.sid;
}

/** Engine.IO + Socket.IO handshake on the main namespace; "auth" event consumed. */
async function connectedSocket(opts) {
  const ws = await engineIoSocket(opts);
  ws.send("40");
  assertConnectAck(await ws.next({ skipPings: true }), "");
  assert.equal(await ws.next({ skipPings: true }), '42["auth",{}]');
  return ws;
}

describe("Socket.IO protocol suite (/socket.io/)", () => {
  before(async () => {
    srv = await startServer();
  });
  afterEach(() => closeAllClients());
  after(async () => {
    closeAllClients();
    await srv?.stop();
  });

  describe("Engine.IO layer", () => {
    engineIoCases({ server: () => srv, path: "/socket.io/", echo: false });
  });

  describe("Socket.IO layer", () => {
    describe("connect", () => {
      it("connects to the main namespace and emits 'auth' with an empty object", T, async () => {
        const ws = await engineIoSocket();
        ws.send("40");
        assertConnectAck(await ws.next({ skipPings: true }), "");
        assert.equal(await ws.next({ skipPings: true }), '42["auth",{}]');
      });

      it("connects to the main namespace with an auth payload and emits it back", T, async () => {
        const ws = await engineIoSocket();
        ws.send('40{"token":"123"}');
        assertConnectAck(await ws.next({ skipPings: true }), "");
        assert.equal(await ws.next({ skipPings: true }), '42["auth",{"token":"123"}]');
      });

      it("connects to the /custom namespace", T, async () => {
        const ws = await engineIoSocket();
        ws.send("40/custom,");
        assertConnectAck(await ws.next({ skipPings: true }), "/custom,");
        assert.equal(await ws.next({ skipPings: true }), '42/custom,["auth",{}]');
      });

      it("connects to the /custom namespace with an auth payload", T, async () => {
        const ws = await engineIoSocket();
        ws.send('40/custom,{"token":"abc"}');
        assertConnectAck(await ws.next({ skipPings: true }), "/custom,");
        assert.equal(await ws.next({ skipPings: true }), '42/custom,["auth",{"token":"abc"}]');
      });

      it("refuses an unknown namespace with CONNECT_ERROR 'Invalid namespace'", T, async () => {
        const ws = await engineIoSocket();
        ws.send("40/random");
        assert.equal(await ws.next({ skipPings: true }), '44/random,{"message":"Invalid namespace"}');
      });

      it("closes the connection upon an invalid handshake packet", T, async () => {
        const ws = await engineIoSocket();
        ws.send("4abc");
        await ws.waitClose();
      });

      it("closes the connection when no CONNECT arrives within connectTimeout", T, async () => {
        // PINGs are answered, so only the connect timeout (1000 ms) can end the session.
        const ws = await engineIoSocket({ autoPong: true });
        const start = Date.now();
        await ws.waitClose(CONNECT_TIMEOUT + 2_000);
        const elapsed = Date.now() - start;
        assert.ok(elapsed >= CONNECT_TIMEOUT - 200, `closed after ${elapsed} ms, before connectTimeout`);
      });
    });

    describe("disconnect", () => {
      it("stays connected at Engine.IO level after leaving the main namespace", T, async () => {
        const ws = await connectedSocket({ autoPong: false });
        ws.send("41");
        // nothing is sent back for the DISCONNECT; the next frame is the regular PING
        assert.equal(await ws.next({ timeout: PING_INTERVAL + PING_TIMEOUT + 500 }), "2");
        assert.ok(ws.isOpen);
      });

      it("joins then leaves /custom while the main namespace keeps working", T, async () => {
        const ws = await connectedSocket();
        ws.send("40/custom");
        assertConnectAck(await ws.next({ skipPings: true }), "/custom,");
        assert.equal(await ws.next({ skipPings: true }), '42/custom,["auth",{}]');
        ws.send("41/custom");
        ws.send('42["message","message to main namespace"]');
        assert.equal(await ws.next({ skipPings: true }), '42["message-back","message to main namespace"]');
      });
    });

    describe("message", () => {
      it("echoes a plain-text event as 'message-back'", T, async () => {
        const ws = await connectedSocket();
        ws.send('42["message",1,"2",{"3":[true]}]');
        assert.equal(await ws.next({ skipPings: true }), '42["message-back",1,"2",{"3":[true]}]');
      });

      it("echoes an event with binary attachments", T, async () => {
        const ws = await connectedSocket();
        ws.send('452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
        ws.send(Uint8Array.from([1, 2, 3]));
        ws.send(Uint8Array.from([4, 5, 6]));
        const [head, a, b] = await ws.nextFrames(3);
        assert.equal(head, '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
        assert.ok(Buffer.isBuffer(a) && Buffer.isBuffer(b), "attachments must be binary frames");
        assert.deepEqual([...a], [1, 2, 3]);
        assert.deepEqual([...b], [4, 5, 6]);
      });

      it("acknowledges a plain-text event with the same arguments", T, async () => {
        const ws = await connectedSocket();
        ws.send('42456["message-with-ack",1,"2",{"3":[false]}]');
        assert.equal(await ws.next({ skipPings: true }), '43456[1,"2",{"3":[false]}]');
      });

      it("acknowledges an event with binary attachments with a BINARY_ACK", T, async () => {
        const ws = await connectedSocket();
        ws.send('452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
        ws.send(Uint8Array.from([1, 2, 3]));
        ws.send(Uint8Array.from([4, 5, 6]));
        const [head, a, b] = await ws.nextFrames(3);
        assert.equal(head, '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
        assert.ok(Buffer.isBuffer(a) && Buffer.isBuffer(b), "attachments must be binary frames");
        assert.deepEqual([...a], [1, 2, 3]);
        assert.deepEqual([...b], [4, 5, 6]);
      });

      it("closes the connection upon an unknown packet type", T, async () => {
        const ws = await connectedSocket();
        ws.send("4abc");
        await ws.waitClose();
      });

      it("closes the connection upon an invalid payload (object instead of array)", T, async () => {
        const ws = await connectedSocket();
        ws.send("42{}");
        await ws.waitClose();
      });

      it("closes the connection upon an invalid ack id", T, async () => {
        const ws = await connectedSocket();
        ws.send('42abc["message-with-ack",1,"2",{"3":[false]}]');
        await ws.waitClose();
      });
    });
  });
});
