// Checks webhooks with the pusher server SDK's own verification, for the Go
// tests (server/webhook_test.go): node verify-webhooks.mjs FILE, where FILE
// is {"appId", "key", "secret", "webhooks": [{"headers": {lower-case name:
// value}, "body": raw body}]}. Prints a JSON array with, for each webhook,
// {"valid": pusher.webhook({headers, rawBody}).isValid(), "events": the
// number of events the SDK reads from it}.

import { readFileSync } from 'node:fs';
import PusherServer from 'pusher';

const input = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const sdk = new PusherServer({ appId: input.appId, key: input.key, secret: input.secret });
const results = input.webhooks.map(({ headers, body }) => {
  const webhook = sdk.webhook({ headers, rawBody: body });
  const valid = webhook.isValid();
  return { valid, events: valid ? webhook.getEvents().length : 0 };
});
process.stdout.write(JSON.stringify(results));
