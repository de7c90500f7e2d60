// Drives the dispatcher's admin page in headless Debian chromium, as an operator would:
// enter the token, pause and resume the subscriber, open it, replay dead letters from the page
// and wait for the replay job to finish.
//
//   ADMIN_TOKEN=... SUBSCRIBER=name node admin_page.mjs http://127.0.0.1:PORT
//
// Environment:
//   ADMIN_TOKEN        the dispatcher's [admin] token (required; not on argv, where ps shows it)
//   SUBSCRIBER         the subscriber to open (required)
//   REPLAY             "one" (default): the Replay button of one record; "all": Replay all
//   REPLAY_EVENT_ID    with REPLAY=one: the record to replay (default: the first listed)
//   MIN_DEAD_LETTERS   wait until the browser lists at least this many records (default 1)
//   MIN_ATTEMPTS       wait until the attempt log lists at least this many rows (default 0)
//   SCREENSHOT         write a PNG of the page here when done
//   CHROMIUM           browser executable (default /usr/bin/chromium)
//   TIMEOUT_MS         limit of each wait (default 60000)
//
// Prints one JSON line on success: {"replayed": [{partition, offset, event_id}], "job": "..."}.
// Exits non-zero, with the reason on stderr, when any step fails, the page throws, or the page
// requests anything outside the dispatcher.

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = (process.argv[2] || process.env.ADMIN_URL || '').replace(/\/+$/, '');
const token = process.env.ADMIN_TOKEN || '';
const subscriber = process.env.SUBSCRIBER || '';
const replay = process.env.REPLAY || 'one';
const replayEventId = process.env.REPLAY_EVENT_ID || '';
const minDeadLetters = Number(process.env.MIN_DEAD_LETTERS || 1);
const minAttempts = Number(process.env.MIN_ATTEMPTS || 0);
const screenshot = process.env.SCREENSHOT || '';
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const timeout = Number(process.env.TIMEOUT_MS || 60000);

/** A failed check: reported without a stack trace. */
class Failure extends Error {}

function fail(message) {
  throw new Failure(message);
}

function checkArguments() {
  if (!/^https?:\/\//.test(base)) fail('usage: ADMIN_TOKEN=... SUBSCRIBER=... node admin_page.mjs http://HOST:PORT');
  if (!token) fail('ADMIN_TOKEN is not set');
  if (!subscriber) fail('SUBSCRIBER is not set');
  if (!['one', 'all'].includes(replay)) fail(`REPLAY must be "one" or "all", not "${replay}"`);
  if (!existsSync(executablePath)) {
    fail(`no browser at ${executablePath}: apt-get install chromium (deploy/local/test.sh does), or set CHROMIUM`);
  }
}

const problems = [];
let userDataDir;
let context;

async function main() {
  checkArguments();
  userDataDir = mkdtempSync(join(tmpdir(), 'switchyard-e2e-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1440, height: 900 },
    colorScheme: 'light',
    locale: 'en-US',
    timezoneId: 'UTC',
  });
  context.setDefaultTimeout(timeout);
  const page = context.pages()[0] || (await context.newPage());

  const origin = new URL(base).origin;
  page.on('pageerror', (err) => problems.push(`page threw: ${err.message}`));
  page.on('request', (req) => {
    const url = req.url();
    if (!url.startsWith(`${origin}/`) && !url.startsWith('data:')) problems.push(`request outside the dispatcher: ${url}`);
  });
  page.on('console', (msg) => {
    if (msg.type() === 'error') console.error(`[browser] ${msg.text()}`);
  });

  const resp = await page.goto(`${base}/admin`);
  if (!resp || !resp.ok()) fail(`GET /admin answered ${resp ? resp.status() : 'nothing'}`);

  // Connect with the token.
  await page.getByLabel('Admin token').fill(token);
  await page.getByRole('button', { name: 'Connect' }).click();
  const row = page.locator(`[data-testid="subscriber-row"][data-name="${subscriber}"]`);
  const error = page.locator('[data-testid="status"].error');
  await row.or(error).first().waitFor();
  if (await error.isVisible()) fail(`the page says: ${(await error.textContent()).trim()}`);
  if (!(await row.isVisible())) fail(`no subscriber ${subscriber} in the table`);
  const stored = await page.evaluate(() => sessionStorage.getItem('switchyard.admin.token'));
  if (stored !== token) fail('the token was not kept in sessionStorage');

  // Pause and resume from the table.
  await row.locator('[data-testid="pause-button"]').click();
  await page.locator(`[data-testid="subscriber-row"][data-name="${subscriber}"][data-state="paused"]`).waitFor();
  await row.locator('[data-testid="resume-button"]').click();
  await page.locator(`[data-testid="subscriber-row"][data-name="${subscriber}"][data-state="running"]`).waitFor();

  // Open the subscriber: its dead letters and attempt log.
  await row.getByTestId('select-subscriber').click();
  await page.getByTestId('detail-name').filter({ hasText: subscriber }).waitFor();
  const records = page.getByTestId('dead-letter-row');
  await page.waitForFunction(
    (n) => document.querySelectorAll('[data-testid="dead-letter-row"]').length >= n,
    minDeadLetters,
    { timeout },
  );
  if (minAttempts > 0) {
    await page.waitForFunction(
      (n) => document.querySelectorAll('[data-testid="attempt-row"]').length >= n,
      minAttempts,
      { timeout },
    );
  }

  // Replay from the page and follow the job.
  const replayed = [];
  if (replay === 'one') {
    const record = replayEventId
      ? page.locator(`[data-testid="dead-letter-row"][data-event-id="${replayEventId}"]`)
      : records.first();
    await record.waitFor();
    replayed.push({
      partition: Number(await record.getAttribute('data-partition')),
      offset: Number(await record.getAttribute('data-offset')),
      event_id: await record.getAttribute('data-event-id'),
    });
    await record.getByTestId('replay-record').click();
  } else {
    for (const r of await records.all()) {
      replayed.push({
        partition: Number(await r.getAttribute('data-partition')),
        offset: Number(await r.getAttribute('data-offset')),
        event_id: await r.getAttribute('data-event-id'),
      });
    }
    const all = page.getByTestId('replay-all');
    await all.click(); // arms the button
    await all.filter({ hasText: 'Confirm' }).click();
  }
  const status = page.getByTestId('job-status');
  await page.locator('[data-testid="job-status"][data-state="done"], [data-testid="job-status"][data-state="failed"]').waitFor();
  const job = (await status.textContent()) || '';
  if ((await status.getAttribute('data-state')) !== 'done') fail(`the replay job failed: ${job}`);

  if (screenshot) {
    // Let the next refresh show the counts after the replay.
    await page.waitForTimeout(2500);
    await page.screenshot({ path: screenshot, fullPage: true });
  }
  if (problems.length) fail(problems.join('\n'));
  console.log(JSON.stringify({ replayed, job }));
}

try {
  await main();
} catch (err) {
  console.error(`admin_page.mjs: ${err instanceof Failure ? err.message : err.stack || err}`);
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
}
