// End-to-end test of the Caseflow web view in Debian's headless Chromium, driven by
// playwright-core (which downloads no browser). `tests/web_e2e.rs` starts the real
// `engine serve` with the IAM playbooks, feeds it the sample Okta events plus one whose
// displayMessage is `<script>alert(1)</script>`, then runs this script with:
//
//   CASEFLOW_URL         the server's base URL (http://127.0.0.1:PORT)
//   CASEFLOW_TOKEN       server.api_token
//   CASEFLOW_XSS_USER    the login of the hostile event's user (its case is the one worked)
//   CASEFLOW_SHOTS       a directory for screenshots (queue.png, case.png, run.png, login.png)
//   CHROMIUM             the browser (default /usr/bin/chromium)
//
// It logs in, sees the queue, opens the hostile event's case (its text shown, no dialog, no
// script run), moves it to in_progress and waits for iam-state-changed's assignment to
// arrive on the page, adds a comment, and opens a run's graph. Exit code 0 on success.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const BASE = need('CASEFLOW_URL');
const TOKEN = need('CASEFLOW_TOKEN');
const XSS_USER = need('CASEFLOW_XSS_USER');
const SHOTS = process.env.CASEFLOW_SHOTS || fs.mkdtempSync(path.join(os.tmpdir(), 'caseflow-shots-'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ANALYST = 'dana.analyst@acme.example';
const TEAM = ['dana.analyst@acme.example', 'eli.analyst@acme.example', 'fay.analyst@acme.example'];
const TIMEOUT = 20000;

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`${name} is not set (tests/web_e2e.rs sets it)`);
    process.exit(2);
  }
  return v;
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

async function shot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, name), fullPage: true });
  console.log(`screenshot ${path.join(SHOTS, name)}`);
}

(async () => {
  const started = Date.now();
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'caseflow-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1360, height: 900 },
    timeout: 30000,
  });
  const dialogs = [];
  const problems = [];
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(TIMEOUT);
    // A dialog would mean an event's script ran; dismiss it and fail afterwards.
    page.on('dialog', async (d) => {
      dialogs.push(d.message());
      await d.dismiss().catch(() => {});
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      // CSP violations and script errors are reported as console errors.
      if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
    });

    // 1. Log in.
    await page.goto(`${BASE}/`);
    check(new URL(page.url()).pathname === '/login', 'not logged in: sent to /login');
    await shot(page, 'login.png');
    await page.fill('input[name="token"]', 'not the token');
    await page.fill('input[name="name"]', ANALYST);
    await page.click('button[type="submit"]');
    await page.waitForSelector('p.error');
    check((await page.textContent('p.error')).includes('wrong token'), 'a wrong token is refused');
    // Chromium logs the 401 of that answer as a console error: expected, so forgotten.
    problems.length = 0;
    await page.fill('input[name="token"]', TOKEN);
    await page.fill('input[name="name"]', ANALYST);
    await Promise.all([page.waitForURL(`${BASE}/`), page.click('button[type="submit"]')]);
    const cookies = await context.cookies(BASE);
    const session = cookies.find((c) => c.name === 'caseflow_session');
    check(session && session.httpOnly && session.sameSite === 'Strict', 'session cookie is HttpOnly, SameSite=Strict');
    check(!session.value.includes(TOKEN), 'the cookie does not carry the token');
    check((await page.evaluate(() => document.cookie)) === '', 'scripts cannot read the cookie');

    // 2. The queue.
    await page.waitForSelector('table.queue');
    const rows = await page.$$eval('tr[data-case]', (trs) => trs.map((tr) => ({
      id: tr.getAttribute('data-case'),
      title: tr.querySelector('td.title').textContent.trim(),
      severity: tr.querySelector('.sev').textContent.trim(),
    })));
    check(rows.length >= 3, `the queue lists the open cases (${rows.length})`);
    const rank = { critical: 4, high: 3, medium: 2, low: 1, informational: 0 };
    check(rows.every((r, i) => i === 0 || rank[rows[i - 1].severity] >= rank[r.severity]), 'most severe first');
    const target = rows.find((r) => r.title.includes(XSS_USER));
    check(target, `the hostile event's case is in the queue (${target && target.id})`);
    check((await page.$$('[data-due]')).length > 0, 'SLA countdowns are shown');
    await shot(page, 'queue.png');

    // 3. The case: the event's text is shown as text, nothing ran.
    await Promise.all([page.waitForURL(`${BASE}/cases/${target.id}`), page.click(`tr[data-case="${target.id}"] td.id a`)]);
    const description = await page.textContent('p.description');
    check(description.includes('<script>alert(1)</script>'), 'the displayMessage is visible as text');
    check(description.includes('<img src=x onerror=alert(2)>'), 'the outcome reason is visible as text');
    const scripts = await page.$$eval('script', (s) => s.map((e) => e.getAttribute('src')));
    check(scripts.length === 1 && scripts[0].startsWith('/assets/app.js'), 'the only script is the page\'s own');
    check((await page.$$('img[src="x"]')).length === 0, 'no injected image');
    check((await page.textContent('#case-state')).trim() === 'new', 'the case is new');
    check((await page.textContent('#case-assignee')).includes('unassigned'), 'the case is unassigned');

    // 4. Move it to in_progress: iam-state-changed assigns it; the page shows it arrive.
    await page.selectOption('#form-state select[name="to"]', 'in_progress');
    await Promise.all([page.waitForURL(/done=state/), page.click('#form-state button[type="submit"]')]);
    check((await page.textContent('p.notice')).includes('State changed'), 'the change is confirmed');
    await page.waitForFunction(() => document.querySelector('#case-state').textContent.trim() === 'in progress');
    check(true, 'the state is in progress');
    await page.waitForFunction(
      (team) => team.includes(document.querySelector('#case-assignee').textContent.trim()),
      TEAM,
      { timeout: TIMEOUT },
    );
    const assignee = (await page.textContent('#case-assignee')).trim();
    check(TEAM.includes(assignee), `the assignment arrived: ${assignee}`);
    await page.waitForSelector('a.actor-playbook:has-text("iam-state-changed")');
    check(true, 'the timeline shows iam-state-changed\'s run');
    const byMe = await page.$$eval('ol.timeline .actor-person', (a) => a.map((e) => e.textContent.trim()));
    check(byMe.includes(ANALYST), 'the timeline records the analyst as the actor of the state change');

    // 5. A change made elsewhere (the API) appears without a reload: the live sections.
    await page.evaluate(() => { window.caseflowNotReloaded = true; });
    const patched = await fetch(`${BASE}/api/cases/${target.id}`, {
      method: 'PATCH',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ severity: 'high', actor: 'api-bot' }),
    });
    check(patched.ok, 'a severity change through the API');
    await page.waitForFunction(() => document.querySelector('#case-severity').textContent.trim() === 'high');
    check(await page.evaluate(() => window.caseflowNotReloaded === true), 'it appears on the open page without a reload');

    // 6. A comment (hostile too: it must stay text).
    const note = 'Called the user: travelling. <b>not bold</b> <script>alert(5)</script>';
    await page.fill('#form-comment textarea[name="text"]', note);
    await Promise.all([page.waitForURL(/done=comment/), page.click('#form-comment button[type="submit"]')]);
    const comments = await page.$$eval('.comment', (cs) => cs.map((c) => ({
      who: c.querySelector('header .actor').textContent.trim(),
      text: c.querySelector('.comment-text').textContent,
    })));
    check(comments.some((c) => c.who === ANALYST && c.text === note), 'the comment is shown, by the analyst, as text');
    check((await page.$$('.comment-text b')).length === 0, 'no markup from the comment');
    await shot(page, 'case.png');

    // 7. A run from the timeline: its graph and steps.
    const run = await page.getAttribute('a.actor-playbook:has-text("iam-case-created")', 'href');
    await page.goto(`${BASE}${run}`);
    await page.waitForSelector('svg.graph');
    const boxes = await page.$$eval('svg.graph g.step', (gs) => gs.map((g) => g.getAttribute('class')));
    // The number of steps of iam-case-created, from the playbook the test server loaded.
    const expectedSteps = Number(process.env.IAM_CASE_CREATED_STEPS);
    check(expectedSteps > 0, 'IAM_CASE_CREATED_STEPS is set');
    check(boxes.length === expectedSteps, `the graph has iam-case-created's ${expectedSteps} steps (${boxes.length})`);
    check(boxes.some((c) => c.includes('succeeded')) && boxes.some((c) => c.includes('skipped')), 'steps are coloured by status');
    const tip = await page.textContent('svg.graph g.step[data-step="enrich"] title');
    check(/attempts: \d/.test(tip) && /duration: /.test(tip), 'a step\'s tooltip has attempts and duration');
    check((await page.$$('table.steps tbody tr')).length === expectedSteps, 'the step table lists every step');
    await shot(page, 'run.png');

    // 8. The playbooks page.
    await page.goto(`${BASE}/playbooks`);
    const names = await page.$$eval('table.playbooks strong', (s) => s.map((e) => e.textContent));
    check(['iam-preprocess', 'iam-case-created', 'iam-state-changed'].every((n) => names.includes(n)), 'the playbooks are listed');

    check(dialogs.length === 0, `no dialog opened (${JSON.stringify(dialogs)})`);
    check(problems.length === 0, `no script error or CSP violation (${JSON.stringify(problems)})`);
    console.log(`all checks passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
})().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
