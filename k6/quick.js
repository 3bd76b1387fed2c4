// Quick smoke load: constant VUs against ${BASE}/hello for a short while.
//
//   k6 run -e BASE=http://127.0.0.1:8080 -e VUS=10 -e DURATION=15s k6/quick.js
//
// A short pause per iteration keeps the request rate (and the JSON output)
// bounded on small machines.

import { sleep } from 'k6';
import { hello, intEnv, strEnv, systemTags, zeroFailureThresholds } from './lib/common.js';

export const options = {
  scenarios: {
    quick: {
      executor: 'constant-vus',
      vus: intEnv('VUS', 10),
      duration: strEnv('DURATION', '15s'),
    },
  },
  thresholds: zeroFailureThresholds,
  systemTags,
};

const pauseS = intEnv('PAUSE_MS', 20) / 1000;

export default function () {
  hello();
  sleep(pauseS);
}
