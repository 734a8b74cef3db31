// Engine.IO v4 protocol conformance, covering every case of the official
// engine.io-protocol test suite (test-suite/test-suite.js), rewritten for
// node:test. The server under test is `$GATEWAY_BIN protocol-suite`, whose
// /engine.io/ path is a plain Engine.IO server that echoes every message
// packet back (text as text, binary as binary), with pingInterval 300 ms,
// pingTimeout 200 ms and maxPayload 1000000.

import { after, afterEach, before, describe } from "node:test";
import { closeAllClients, startServer } from "./harness.mjs";
import { engineIoCases } from "./eio-cases.mjs";

let srv;

describe("Engine.IO protocol (/engine.io/)", () => {
  before(async () => {
    srv = await startServer();
  });
  afterEach(() => closeAllClients());
  after(async () => {
    closeAllClients();
    await srv?.stop();
  });

  engineIoCases({ server: () => srv, path: "/engine.io/", echo: true });
});
