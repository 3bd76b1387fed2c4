// Steady load while new versions are deployed to the standby colour and
// switched to, several rounds in a row (scripts/scenario.sh runs the
// `switchyard deploy` / `switchyard switch` loop alongside).
//
// Deploys replace the standby allocations (a destructive update) and
// switches flip which colour serves; neither may fail a request, and no
// request may reach the old colour after a switch was acknowledged.
//
//   k6 run --out json=run.json -e BASE=http://127.0.0.1:8080 -e RATE=150 \
//       -e DURATION=120s k6/deploy-under-load.js

import exec from 'k6/execution';
import { intEnv, mixed, strEnv, systemTags, zeroFailureThresholds } from './lib/common.js';

export const options = {
  scenarios: {
    deploy_under_load: {
      executor: 'constant-arrival-rate',
      rate: intEnv('RATE', 150),
      timeUnit: '1s',
      duration: strEnv('DURATION', '120s'),
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
