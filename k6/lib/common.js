// Shared pieces of switchyard's k6 scenarios.
//
// Every HTTP request goes through `hello()` (GET) or `echo()` (POST with a
// body), which record one `sy_req` sample: the value is the request's start
// time (epoch ms) and the tags say which version answered (X-App-Version),
// when the answer was complete (`end_ms`), k6's own sub-millisecond measure
// of the exchange (`dur_ms`), whether it was good (`ok`) and what it was
// (`kind`: `http` or `post`). `k6 run --out json=FILE` keeps these, and `stale-check` lines them up against the switch log to prove
// that no request starting after a switch acknowledgement saw the old
// colour. A Trend is used because k6 keeps every sample of a Trend; the
// start time is the value so the sample is self-describing even without the
// tags' `end_ms`.

import http from 'k6/http';
import { check } from 'k6';
import { Trend } from 'k6/metrics';

export const BASE = (__ENV.BASE || 'http://127.0.0.1:8080').replace(/\/+$/, '');

// The sentence every version of hello-service ends its greeting with; the
// player in front of it differs per version.
export const GREETING = 'is the best player in the world!';

export const syReq = new Trend('sy_req');

// Only the tags the verdict or a human reading the summary needs: k6's
// default set (url, method, proto, ...) multiplies the size of the JSON
// output for no gain.
export const systemTags = ['status', 'check', 'scenario', 'error_code'];

export function intEnv(name, fallback) {
  const v = parseInt(__ENV[name] || '', 10);
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

export function strEnv(name, fallback) {
  return __ENV[name] && __ENV[name].length > 0 ? __ENV[name] : fallback;
}

// Failing any request or any check fails the run.
export const zeroFailureThresholds = {
  http_req_failed: ['rate==0'],
  checks: ['rate==1'],
};

function record(start, end, res, version, ok, kind) {
  const dur = res.timings && res.timings.duration;
  syReq.add(start, {
    version,
    end_ms: String(end),
    dur_ms: dur !== undefined ? dur.toFixed(3) : '',
    ok: String(ok),
    kind,
  });
}

// GET /hello once, check it, and record the sample.
export function hello() {
  const start = Date.now();
  const res = http.get(`${BASE}/hello`, { timeout: '10s', tags: { name: 'hello' } });
  const end = Date.now();
  const version = (res.headers && res.headers['X-App-Version']) || '';
  const ok = check(res, {
    'status is 200': (r) => r.status === 200,
    'body is the greeting': (r) => typeof r.body === 'string' && r.body.includes(GREETING),
    'X-App-Version is set': () => version.length > 0,
  });
  record(start, end, res, version, ok, 'http');
  return res;
}

// Bytes of each POST body (POST_BYTES, default 4 KiB).
export const POST_BYTES = intEnv('POST_BYTES', 4096);
const postBody = 'x'.repeat(POST_BYTES);

// POST a POST_BYTES body to /echo once, check that the answering version
// read all of it, and record the sample (kind `post`). A POST is not
// idempotent, so the proxy never retries it once the body went out: these
// requests prove a switch loses nothing even where a retry cannot help.
export function echo() {
  const start = Date.now();
  const res = http.post(`${BASE}/echo`, postBody, {
    timeout: '10s',
    tags: { name: 'echo' },
    headers: { 'Content-Type': 'application/octet-stream' },
  });
  const end = Date.now();
  const version = (res.headers && res.headers['X-App-Version']) || '';
  const ok = check(res, {
    'POST status is 200': (r) => r.status === 200,
    'POST body was read whole': (r) => r.body === `${version} read ${POST_BYTES} bytes\n`,
    'X-App-Version is set': () => version.length > 0,
  });
  record(start, end, res, version, ok, 'post');
  return res;
}

// One request of the mixed load: every POST_EVERY-th iteration (default 4,
// so a quarter of the traffic) is an `echo()` POST, the rest `hello()`.
const postEvery = intEnv('POST_EVERY', 4);
export function mixed(iteration) {
  return iteration % postEvery === 0 ? echo() : hello();
}
