// Interop test: a headless Chromium page (driven by playwright-core) talks MQTT over WebSocket to
// the hmq release binary, with the browser build of MQTT.js 5.
//
// Run by run.sh as `node chromium_ws.mjs PORT WSPORT` against a broker with MQTT on 127.0.0.1:PORT
// and MQTT over WebSocket on ws://127.0.0.1:WSPORT/ws. Checks, in the browser: a WebSocket that
// offers `mqttv3.1, mqtt` gets `mqtt` (browsers refuse an answer that picks nothing they offered);
// MQTT.js connects, subscribes, receives a message published from Node over TCP, and publishes
// one that Node receives. The page is about:blank filled by setContent, so nothing is fetched.
//
// Needs Chromium at /usr/bin/chromium (apt-get install chromium; CHROMIUM overrides the path).
// Every wait is bounded; all traffic goes to 127.0.0.1.
import { createRequire } from 'node:module';
import mqtt from 'mqtt';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const [port, wsPort] = process.argv.slice(2).map(Number);
if (!port || !wsPort) {
  console.error('usage: node chromium_ws.mjs PORT WSPORT');
  process.exit(2);
}
const WS_URL = `ws://127.0.0.1:${wsPort}/ws`;
const TIMEOUT_MS = 20000;

function expectEqual(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    timeout: TIMEOUT_MS,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const node = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
    clientId: 'node-side',
    connectTimeout: 5000,
    reconnectPeriod: 0,
  });
  const nodeReady = new Promise((resolve, reject) => {
    node.once('connect', resolve);
    node.once('error', reject);
  });
  try {
    console.log(`chromium ${browser.version()}`);
    const page = await browser.newPage();
    page.setDefaultTimeout(TIMEOUT_MS);
    page.on('console', (m) => console.log(`  [browser ${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => console.log(`  [browser error] ${e}`));
    await page.setContent('<!doctype html><meta charset="utf-8"><title>hmq over WebSocket</title>');

    // 1. The browser's own WebSocket offering two subprotocols.
    const protocol = await page.evaluate(
      (url) =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(url, ['mqttv3.1', 'mqtt']);
          const timer = setTimeout(() => reject(new Error('no WebSocket open within 10 s')), 10000);
          ws.onopen = () => {
            clearTimeout(timer);
            resolve(ws.protocol);
            ws.close();
          };
          ws.onerror = () => {
            clearTimeout(timer);
            reject(new Error('WebSocket failed (the browser refused the handshake)'));
          };
        }),
      WS_URL,
    );
    expectEqual(protocol, 'mqtt', 'subprotocol the browser got for [mqttv3.1, mqtt]');
    console.log('ok   - browser WebSocket offering mqttv3.1, mqtt got mqtt');

    // 2. MQTT.js (browser build) in the page.
    await page.addScriptTag({ path: require.resolve('mqtt/dist/mqtt.min') /* exports map: dist/mqtt.min.js */ });
    await nodeReady;
    await node.subscribeAsync('browser/up', { qos: 1 });
    const fromBrowser = new Promise((resolve) => {
      node.on('message', (topic, payload) => resolve({ topic, payload: payload.toString() }));
    });
    // Connects and subscribes in the page; keeps the client in window.hmqClient and the first
    // message it receives in window.hmqMessage (a promise).
    await page.evaluate(
      (url) =>
        new Promise((resolve, reject) => {
          const client = window.mqtt.connect(url, {
            clientId: 'browser-page',
            connectTimeout: 5000,
            reconnectPeriod: 0,
          });
          window.hmqClient = client;
          window.hmqMessage = new Promise((got) => {
            client.on('message', (topic, payload, packet) =>
              got({ topic, payload: new TextDecoder().decode(payload), qos: packet.qos }),
            );
          });
          client.on('error', (e) => reject(new Error(`MQTT.js error: ${e.message}`)));
          client.on('connect', () => {
            client.subscribe('browser/down', { qos: 1 }, (err, granted) => {
              if (err) reject(err);
              else resolve(granted.map((g) => g.qos));
            });
          });
        }),
      WS_URL,
    );
    await node.publishAsync('browser/down', 'hello browser', { qos: 1 });
    const received = await page.evaluate(() => window.hmqMessage);
    expectEqual(received, { topic: 'browser/down', payload: 'hello browser', qos: 1 }, 'message in the browser');
    console.log('ok   - MQTT.js in Chromium received a message published from Node over TCP');

    await page.evaluate(
      () =>
        new Promise((resolve, reject) => {
          window.hmqClient.publish('browser/up', 'hello node', { qos: 1 }, (err) => (err ? reject(err) : resolve()));
        }),
    );
    expectEqual(await fromBrowser, { topic: 'browser/up', payload: 'hello node' }, 'message from the browser');
    console.log('ok   - MQTT.js in Chromium published a message Node received over TCP');
    await page.evaluate(() => new Promise((resolve) => window.hmqClient.end(false, {}, resolve)));
  } finally {
    node.end(true);
    await browser.close();
  }
}

let timer;
try {
  await Promise.race([
    main(),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${3 * TIMEOUT_MS} ms`)), 3 * TIMEOUT_MS);
    }),
  ]);
  console.log('chromium_ws: all checks passed');
  process.exit(0);
} catch (e) {
  console.log(`FAIL - ${e?.stack ?? e}`);
  console.log('chromium_ws: FAILED');
  process.exit(1);
} finally {
  clearTimeout(timer);
}
