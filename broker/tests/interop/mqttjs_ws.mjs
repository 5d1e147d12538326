// Interop test: MQTT.js 5 (Node) over WebSocket against the hmq release binary.
//
// Run by run.sh as `node mqttjs_ws.mjs PORT WSPORT` against a broker with MQTT on 127.0.0.1:PORT
// and MQTT over WebSocket on ws://127.0.0.1:WSPORT/ws. Checks: QoS 0/1/2 publish and delivery
// over ws://; messages crossing between WebSocket and TCP clients; a WebSocket that offers several
// subprotocols (`mqttv3.1, mqtt` gets `mqtt`); an MQTT 3.1 client on subprotocol `mqttv3.1`; a
// large message; the will of a WebSocket client that drops its connection; 404 on another path.
//
// mqttjs_wss.sh runs the same checks over WSS: it sets HMQ_WS_URL (wss://127.0.0.1:WSPORT/ws) and
// HMQ_WS_CA, HMQ_WS_CERT, HMQ_WS_KEY (PEM files: the CA to trust, the client certificate and key),
// and one more check runs: a client without a certificate is refused.
//
// Every wait is bounded (each check fails after 15 s); all traffic goes to 127.0.0.1.
import { readFileSync } from 'node:fs';
import mqtt from 'mqtt';
import WebSocket from 'ws';

const [port, wsPort] = process.argv.slice(2).map(Number);
if (!port || !wsPort) {
  console.error('usage: node mqttjs_ws.mjs PORT WSPORT');
  process.exit(2);
}
const WS_URL = process.env.HMQ_WS_URL || `ws://127.0.0.1:${wsPort}/ws`;
const WSS = WS_URL.startsWith('wss:');
// TLS options for wss:// (MQTT.js hands ca/cert/key to the ws library).
const TLS = {};
if (process.env.HMQ_WS_CA) TLS.ca = readFileSync(process.env.HMQ_WS_CA);
if (process.env.HMQ_WS_CERT) TLS.cert = readFileSync(process.env.HMQ_WS_CERT);
if (process.env.HMQ_WS_KEY) TLS.key = readFileSync(process.env.HMQ_WS_KEY);
const NAME = WSS ? 'mqttjs_ws (wss)' : 'mqttjs_ws';
const TCP_URL = `mqtt://127.0.0.1:${port}`;
const CHECK_TIMEOUT_MS = 15000;

// Everything a check opens, closed when it ends (even on failure).
let opened = [];

function connect(url, options = {}) {
  const client = mqtt.connect(url, {
    connectTimeout: 5000,
    reconnectPeriod: 0,
    ...(url.startsWith('wss:') ? TLS : {}),
    ...options,
  });
  opened.push(client);
  return new Promise((resolve, reject) => {
    client.once('connect', () => resolve(client));
    client.once('error', reject);
    client.once('close', () => reject(new Error(`connection to ${url} closed before CONNACK`)));
  });
}

// Connects over WebSocket and returns the client and its WebSocket (from MQTT.js's
// createWebsocket hook), offering `offered` subprotocols, or what MQTT.js offers by default.
async function connectWs(options, offered) {
  let socket;
  const client = await connect(WS_URL, {
    ...options,
    createWebsocket: (url, protocols, opts) => {
      socket = new WebSocket(url, offered ?? protocols, opts.wsOptions);
      return socket;
    },
  });
  return { client, socket };
}

// Resolves with the next `count` messages the client receives: [{topic, payload, qos, retain}].
function collect(client, count) {
  const got = [];
  return new Promise((resolve) => {
    client.on('message', (topic, payload, packet) => {
      got.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain });
      if (got.length === count) resolve(got);
    });
  });
}

function expectEqual(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}

const checks = [];
function check(name, fn) {
  checks.push({ name, fn });
}

check(`QoS 0, 1 and 2 over ${WSS ? 'wss' : 'ws'}:// (subscribe, publish, receive)`, async () => {
  const c = await connect(WS_URL, { clientId: 'js-ws-qos' });
  const granted = await c.subscribeAsync('js/qos/#', { qos: 2 });
  expectEqual(granted.map((g) => g.qos), [2], 'granted QoS');
  const messages = collect(c, 3);
  for (const qos of [0, 1, 2]) {
    // For QoS 1 and 2 this resolves once the PUBACK / PUBCOMP is in.
    await c.publishAsync(`js/qos/${qos}`, `payload ${qos}`, { qos });
  }
  const got = (await messages).sort((a, b) => a.qos - b.qos);
  expectEqual(
    got,
    [0, 1, 2].map((q) => ({ topic: `js/qos/${q}`, payload: `payload ${q}`, qos: q, retain: false })),
    'messages',
  );
});

check('messages cross between WebSocket and TCP clients', async () => {
  const ws = await connect(WS_URL, { clientId: 'js-cross-ws' });
  const tcp = await connect(TCP_URL, { clientId: 'js-cross-tcp' });
  await ws.subscribeAsync('cross/to-ws', { qos: 1 });
  await tcp.subscribeAsync('cross/to-tcp', { qos: 1 });
  const atWs = collect(ws, 1);
  const atTcp = collect(tcp, 1);
  await tcp.publishAsync('cross/to-ws', 'from tcp', { qos: 1 });
  await ws.publishAsync('cross/to-tcp', 'from ws', { qos: 1 });
  expectEqual((await atWs)[0].payload, 'from tcp', 'TCP → WebSocket');
  expectEqual((await atTcp)[0].payload, 'from ws', 'WebSocket → TCP');
});

check('a WebSocket offering several subprotocols gets mqtt', async () => {
  for (const [offered, want] of [
    [['mqttv3.1', 'mqtt'], 'mqtt'],
    [['chat', 'mqttv3.1'], 'mqttv3.1'],
  ]) {
    // MQTT.js offers one subprotocol; its createWebsocket hook lets a client offer more.
    const { client: c, socket } = await connectWs({ clientId: `js-multi-${want}` }, offered);
    expectEqual(socket.protocol, want, `subprotocol chosen from ${offered}`);
    await c.subscribeAsync('multi/t', { qos: 1 });
    const got = collect(c, 1);
    await c.publishAsync('multi/t', 'works', { qos: 1 });
    expectEqual((await got)[0].payload, 'works', 'message');
  }
});

check('MQTT 3.1 (MQIsdp) over subprotocol mqttv3.1', async () => {
  const { client: c, socket } = await connectWs({
    clientId: 'js-mqtt31',
    protocolId: 'MQIsdp',
    protocolVersion: 3,
  });
  // MQTT.js offers only mqttv3.1 for MQTT 3.1.
  expectEqual(socket.protocol, 'mqttv3.1', 'subprotocol');
  await c.subscribeAsync('old/t', { qos: 2 });
  const got = collect(c, 1);
  await c.publishAsync('old/t', 'three-one', { qos: 2 });
  expectEqual((await got)[0], { topic: 'old/t', payload: 'three-one', qos: 2, retain: false }, 'message');
});

check('a 600 KiB message over WebSocket, both ways', async () => {
  const ws = await connect(WS_URL, { clientId: 'js-big-ws' });
  const tcp = await connect(TCP_URL, { clientId: 'js-big-tcp' });
  const big = 'x'.repeat(600 * 1024 - 7) + 'the end';
  await ws.subscribeAsync('big/down', { qos: 1 });
  await tcp.subscribeAsync('big/up', { qos: 1 });
  const down = collect(ws, 1);
  const up = collect(tcp, 1);
  await tcp.publishAsync('big/down', big, { qos: 1 });
  await ws.publishAsync('big/up', big, { qos: 1 });
  const d = (await down)[0].payload;
  const u = (await up)[0].payload;
  if (d !== big) throw new Error(`TCP → WebSocket: ${d.length} bytes arrived, wanted ${big.length}`);
  if (u !== big) throw new Error(`WebSocket → TCP: ${u.length} bytes arrived, wanted ${big.length}`);
});

check('retained message and the will of a dropped WebSocket client', async () => {
  const watcher = await connect(TCP_URL, { clientId: 'js-will-watcher' });
  await watcher.subscribeAsync('will/js', { qos: 1 });
  const will = collect(watcher, 1);
  const { client: c, socket } = await connectWs({
    clientId: 'js-will',
    will: { topic: 'will/js', payload: 'js gone', qos: 1, retain: false },
  });
  await c.publishAsync('retained/js', 'kept', { qos: 1, retain: true });
  // Drop the TCP connection under the WebSocket, with neither DISCONNECT nor a close frame.
  socket.terminate();
  expectEqual((await will)[0].payload, 'js gone', 'will');
  const late = await connect(WS_URL, { clientId: 'js-late' });
  const retained = collect(late, 1);
  await late.subscribeAsync('retained/js', { qos: 1 });
  expectEqual((await retained)[0], { topic: 'retained/js', payload: 'kept', qos: 1, retain: true }, 'retained');
  await late.publishAsync('retained/js', '', { qos: 1, retain: true });
});

check('another path is answered 404', async () => {
  const status = await new Promise((resolve, reject) => {
    const socket = new WebSocket(WS_URL.replace(/\/ws$/, '/not-mqtt'), ['mqtt'], TLS);
    socket.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode);
      socket.terminate();
    });
    socket.on('open', () => reject(new Error('upgraded on the wrong path')));
    socket.on('error', (e) => reject(e));
  });
  expectEqual(status, 404, 'HTTP status');
});

if (WSS && TLS.cert) {
  check('WSS: a client without a certificate is refused', async () => {
    const { cert: _cert, key: _key, ...noCert } = TLS;
    const outcome = await new Promise((resolve) => {
      const socket = new WebSocket(WS_URL, ['mqtt'], noCert);
      socket.on('open', () => {
        socket.terminate();
        resolve('open');
      });
      socket.on('error', (e) => resolve(`refused: ${e.message}`));
      socket.on('unexpected-response', () => resolve('refused: HTTP'));
    });
    if (outcome === 'open') throw new Error('a WebSocket opened without a client certificate');
  });
}

let failed = 0;
for (const { name, fn } of checks) {
  const start = Date.now();
  opened = [];
  let timer;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
      }),
    ]);
    console.log(`ok   - ${name} (${Date.now() - start} ms)`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL - ${name}: ${e?.stack ?? e}`);
  } finally {
    clearTimeout(timer);
    for (const c of opened) c.end(true);
  }
}
console.log(
  failed ? `${NAME}: ${failed} of ${checks.length} checks FAILED` : `${NAME}: all ${checks.length} checks passed`,
);
process.exit(failed ? 1 : 0);
