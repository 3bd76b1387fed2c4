// WebSocket sessions held open across switches.
//
// Each VU opens a session to ${BASE}/ws (ws:// derived from BASE), keeps it
// open for SESSION_S seconds and sends a numbered text message every
// INTERVAL_MS. hello-service echoes each one prefixed with its version, so
// every echo proves the message went through the proxy and came back, and
// its prefix shows which colour the session is pinned to. Meanwhile
// scripts/scenario.sh switches the active colour every second: sessions
// opened before a switch must keep working on their old colour (the proxy
// drains, it does not cut), and sessions opened after a switch must land on
// the new one.
//
// Samples (`sy_req`, see lib/common.js):
// - one per session handshake, kind `ws_open`, version from the 101's
//   X-App-Version: judged for staleness like an HTTP request;
// - one per echo, kind `ws`: counted and checked for loss, never judged
//   for staleness (a session is pinned to the instance that accepted it).
//
//   k6 run --out json=run.json -e BASE=http://127.0.0.1:8080 -e VUS=10 \
//       -e DURATION=40s -e SESSION_S=12 k6/websocket.js

import ws from 'k6/ws';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';
import { BASE, intEnv, strEnv, syReq, systemTags } from './lib/common.js';

const WS_BASE = BASE.replace(/^http/, 'ws');
const SESSION_MS = intEnv('SESSION_S', 12) * 1000;
const INTERVAL_MS = intEnv('INTERVAL_MS', 250);
// After the last send, how long echoes get to come back before the session
// closes; anything still missing then counts as lost.
const DRAIN_MS = intEnv('DRAIN_MS', 2000);

const lost = new Counter('sy_ws_lost');
const wsErrors = new Counter('sy_ws_errors');

export const options = {
  scenarios: {
    websocket: {
      executor: 'constant-vus',
      vus: intEnv('VUS', 10),
      duration: strEnv('DURATION', '40s'),
      // Let the last sessions finish their echoes.
      gracefulStop: `${Math.ceil(SESSION_MS / 1000) + 10}s`,
    },
  },
  thresholds: {
    checks: ['rate==1'],
    sy_ws_lost: ['count==0'],
    sy_ws_errors: ['count==0'],
  },
  systemTags,
};

export default function () {
  // Stagger the first sessions so handshakes keep happening between
  // switches instead of all at once.
  if (__ITER === 0) {
    sleep((((__VU - 1) % 10) * SESSION_MS) / 10 / 1000);
  }
  lost.add(0);
  wsErrors.add(0);
  const pending = {}; // seq -> send time
  let seq = 0;
  let sending = true;
  let openedAt = 0;
  let sessionVersion = '';
  let mixed = false;
  const start = Date.now();

  const res = ws.connect(`${WS_BASE}/ws`, { tags: { name: 'ws' } }, (socket) => {
    socket.on('open', () => {
      openedAt = Date.now();
      socket.setInterval(() => {
        if (!sending) {
          return;
        }
        seq += 1;
        const id = `${__VU}-${__ITER}-${seq}`;
        pending[id] = Date.now();
        socket.send(`m ${id}`);
      }, INTERVAL_MS);
      socket.setTimeout(() => {
        // Stop sending, give the last echoes time to come back, then close.
        sending = false;
        socket.setTimeout(() => socket.close(), DRAIN_MS);
      }, SESSION_MS);
    });

    socket.on('message', (msg) => {
      const now = Date.now();
      const m = /^(.*): m (\S+)$/.exec(String(msg));
      if (!m) {
        check(msg, { 'echo has the version prefix': () => false });
        return;
      }
      const version = m[1];
      const id = m[2];
      const sent = pending[id];
      const known = sent !== undefined;
      delete pending[id];
      if (sessionVersion === '') {
        sessionVersion = version;
      } else if (version !== sessionVersion) {
        mixed = true;
      }
      const ok = check(version, {
        'echo answers a message that was sent': () => known,
        'echo comes from the session colour': (v) => v === sessionVersion,
      });
      syReq.add(known ? sent : now, { version, end_ms: String(now), ok: String(ok), kind: 'ws' });
    });

    socket.on('error', (e) => {
      wsErrors.add(1);
      check(e, { 'no websocket error': () => false });
    });
  });
  const closedAt = Date.now();

  // Whatever is still pending never came back.
  for (const id of Object.keys(pending)) {
    const sent = pending[id];
    lost.add(1);
    syReq.add(sent, { version: '', end_ms: String(closedAt), ok: 'false', kind: 'ws' });
  }
  const headerVersion = (res && res.headers && res.headers['X-App-Version']) || '';
  const upgraded = check(res, {
    'handshake is 101': (r) => r && r.status === 101,
    'handshake names a version': () => headerVersion.length > 0,
    'echoes come from the handshake version': () => sessionVersion === '' || sessionVersion === headerVersion,
    'one colour per session': () => !mixed,
  });
  syReq.add(start, {
    version: headerVersion,
    end_ms: String(openedAt > 0 ? openedAt : closedAt),
    ok: String(upgraded && openedAt > 0),
    kind: 'ws_open',
  });
}
