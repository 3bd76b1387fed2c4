// Steady load while the active colour is switched every second.
//
// k6 only generates the load; the switching (POST /switch on the admin API,
// once a second, 60+ times) runs alongside it from scripts/scenario.sh,
// which logs every acknowledgement for `stale-check`. The thresholds here
// catch failures; staleness needs the switch log, so it is judged
// afterwards.
//
//   k6 run --out json=run.json -e BASE=http://127.0.0.1:8080 -e RATE=200 \
//       -e DURATION=70s k6/switch-under-load.js
//
// A constant arrival rate keeps the load the same whatever the latency
// does, so a slow cutover shows up as latency rather than as less traffic.

import exec from 'k6/execution';
import { intEnv, mixed, strEnv, systemTags, zeroFailureThresholds } from './lib/common.js';

export const options = {
  scenarios: {
    switch_under_load: {
      executor: 'constant-arrival-rate',
      rate: intEnv('RATE', 200),
      timeUnit: '1s',
      duration: strEnv('DURATION', '70s'),
      preAllocatedVUs: intEnv('VUS', 20),
      maxVUs: intEnv('MAX_VUS', 60),
    },
  },
  thresholds: zeroFailureThresholds,
  systemTags,
};

export default function () {
  mixed(exec.scenario.iterationInTest);
}
