// switchyard admin page: talks to the dispatcher's /admin/api with a bearer token kept in
// sessionStorage. Plain DOM, no framework, no network beyond the dispatcher.
'use strict';

(() => {
  const API = '/admin/api';
  const TOKEN_KEY = 'switchyard.admin.token';
  const REFRESH_MS = 2000;
  const JOB_POLL_MS = 500;
  const DEAD_LETTER_LIMIT = 50;
  const ATTEMPT_LIMIT = 100;

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    subscribers: [],
    rows: new Map(), // subscriber name -> its <tr>
    selected: selectedFromHash(),
    deadLetterCount: null, // the selected subscriber's count when its list was last loaded
    attemptsKey: '',
    refreshing: false,
    statusFromRefresh: true,
    jobRunning: false,
    armedReplayAll: null,
  };

  const $ = (id) => document.getElementById(id);

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** One API call; non-2xx answers become an ApiError carrying the `{code, message}` body. */
  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${state.token}`, Accept: 'application/json' };
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(API + path, init);
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!resp.ok) {
      const code = (data && data.code) || `http_${resp.status}`;
      const message = (data && data.message) || text || resp.statusText;
      throw new ApiError(resp.status, code, message);
    }
    return data;
  }

  /** Builds an element; strings become text nodes, never HTML. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  const enc = encodeURIComponent;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const intFmt = new Intl.NumberFormat('en-US');
  const fmtInt = (n) => (typeof n === 'number' ? intFmt.format(n) : '—');
  const fmtRate = (x) => (typeof x === 'number' ? x.toFixed(x >= 100 ? 0 : 1) : '—');

  function fmtTime(value) {
    if (!value) return '—';
    const d = new Date(value);
    if (Number.isNaN(d.getTime())) return String(value);
    return d.toLocaleString('sv-SE'); // 2026-11-23 10:00:00, local time
  }

  function describe(err) {
    if (err instanceof ApiError) {
      if (err.status === 401) return 'The token was rejected: check [admin] token in the dispatcher config.';
      return `${err.message} (${err.code})`;
    }
    return `The dispatcher did not answer: ${err.message}`;
  }

  /** The status line; a refresh only replaces what an earlier refresh wrote, not an action's result. */
  function setStatus(text, isError = false, fromRefresh = false) {
    state.statusFromRefresh = fromRefresh;
    const status = $('status');
    status.textContent = text;
    status.classList.toggle('error', isError);
  }

  function selectedFromHash() {
    const m = /^#subscriber=(.+)$/.exec(location.hash);
    return m ? decodeURIComponent(m[1]) : null;
  }

  // ---- subscribers table ---------------------------------------------------------------

  async function refresh() {
    if (!state.token || state.refreshing) return;
    state.refreshing = true;
    try {
      const data = await api('GET', '/subscribers');
      state.subscribers = (data && data.subscribers) || [];
      renderSubscribers();
      if (state.statusFromRefresh) setStatus(`Connected: ${state.subscribers.length} subscriber(s).`, false, true);
      $('updated').textContent = `updated ${new Date().toLocaleTimeString('sv-SE')}, every 2 s`;
      refreshDetail(); // not awaited: a slow dead-letter read must not hold up the table
    } catch (err) {
      setStatus(describe(err), true, true);
    } finally {
      state.refreshing = false;
    }
  }

  function renderSubscribers() {
    const body = $('subscribers-body');
    const names = new Set(state.subscribers.map((s) => s.name));
    for (const [name, row] of state.rows) {
      if (!names.has(name)) {
        row.remove();
        state.rows.delete(name);
      }
    }
    body.querySelector('td.empty')?.parentElement.remove();
    if (state.subscribers.length === 0) {
      body.append(el('tr', {}, el('td', { class: 'empty', colspan: 10, text: 'No subscribers configured.' })));
      return;
    }
    for (const sub of state.subscribers) {
      let row = state.rows.get(sub.name);
      if (!row) {
        row = subscriberRow(sub.name);
        state.rows.set(sub.name, row);
      }
      body.append(row); // keeps the API's order; moving a node keeps its focus state
      updateSubscriberRow(row, sub);
    }
  }

  function subscriberRow(name) {
    const cell = (cls) => el('td', { class: cls });
    const row = el('tr', { 'data-testid': 'subscriber-row', 'data-name': name });
    const pick = el('button', {
      type: 'button',
      class: 'link-like',
      'data-testid': 'select-subscriber',
      text: name,
      onclick: () => select(name),
    });
    const nameCell = el('td', {}, pick, el('span', { class: 'sub mono' }));
    const toggle = el('button', { type: 'button', class: 'small secondary', onclick: () => toggleState(name, toggle) });
    const stateCell = el('td', {}, el('span', { class: 'badge', 'data-testid': 'state' }), toggle,
      el('span', { class: 'sub', 'data-testid': 'paused-reason' }));
    const breakerCell = el('td', {}, el('span', { class: 'badge', 'data-testid': 'breaker' }));
    row.append(nameCell, stateCell, breakerCell);
    for (const key of ['lag', 'delivered_per_sec', 'failed_per_sec', 'delivered', 'parked', 'dead_letters', 'parking_failed']) {
      const td = cell('num');
      td.dataset.field = key;
      td.dataset.testid = key.replaceAll('_', '-');
      row.append(td);
    }
    return row;
  }

  function updateSubscriberRow(row, sub) {
    const [nameCell, stateCell, breakerCell] = row.children;
    nameCell.querySelector('.sub').textContent = `${(sub.topics || []).join(', ')} → ${sub.target || ''}`;
    const badge = stateCell.querySelector('.badge');
    badge.textContent = sub.state;
    badge.className = `badge ${sub.state}`;
    row.dataset.state = sub.state;
    stateCell.querySelector('.sub').textContent = sub.paused_reason || '';
    const breaker = breakerCell.querySelector('.badge');
    breaker.textContent = (sub.breaker || 'closed').replace('_', '-');
    breaker.className = `badge breaker-${sub.breaker || 'closed'}`;
    breaker.title = `${sub.breaker_transitions || 0} transitions since start-up`;
    const toggle = stateCell.querySelector('button');
    const paused = sub.state === 'paused';
    if (!toggle.dataset.busy) {
      toggle.textContent = paused ? 'Resume' : 'Pause';
      toggle.dataset.testid = paused ? 'resume-button' : 'pause-button';
      toggle.setAttribute('aria-label', `${paused ? 'Resume' : 'Pause'} ${sub.name}`);
    }
    for (const td of row.querySelectorAll('td[data-field]')) {
      const key = td.dataset.field;
      const value = sub[key];
      td.textContent = key.endsWith('_per_sec') ? fmtRate(value) : fmtInt(value);
    }
    const dl = row.querySelector('td[data-field="dead_letters"]');
    dl.classList.toggle('count-bad', sub.dead_letters > 0);
    const parkFail = row.querySelector('td[data-field="parking_failed"]');
    parkFail.classList.toggle('count-bad', sub.parking_failed > 0);
    const failed = row.querySelector('td[data-field="failed_per_sec"]');
    failed.classList.toggle('count-warn', sub.failed_per_sec > 0);
    const selected = sub.name === state.selected;
    row.classList.toggle('selected', selected);
    if (selected) row.setAttribute('aria-current', 'true');
    else row.removeAttribute('aria-current');
  }

  async function toggleState(name, button) {
    const action = button.dataset.testid === 'resume-button' ? 'resume' : 'pause';
    button.disabled = true;
    button.dataset.busy = '1';
    try {
      const res = await api('POST', `/subscribers/${enc(name)}/${action}`);
      const sub = state.subscribers.find((s) => s.name === name);
      if (sub && res && res.state) sub.state = res.state;
      setStatus(`${name} is ${res ? res.state : action}.`);
    } catch (err) {
      setStatus(`Could not ${action} ${name}: ${describe(err)}`, true);
    } finally {
      button.disabled = false;
      delete button.dataset.busy;
      renderSubscribers();
    }
  }

  // ---- selected subscriber ---------------------------------------------------------------

  function select(name) {
    state.selected = name;
    state.deadLetterCount = null;
    state.attemptsKey = '';
    history.replaceState(null, '', `#subscriber=${enc(name)}`);
    $('dead-letters-body').replaceChildren();
    $('attempts-body').replaceChildren();
    renderSubscribers();
    refreshDetail();
  }

  async function refreshDetail() {
    const sub = state.subscribers.find((s) => s.name === state.selected);
    const detail = $('detail');
    if (!sub) {
      detail.hidden = true;
      return;
    }
    detail.hidden = false;
    $('detail-name').textContent = sub.name;
    $('detail-target').textContent = `${(sub.topics || []).join(', ')} → ${sub.target || ''}`;
    fillTopics(sub.topics || []);
    updateReplayButtons();
    const work = [once('attempts', () => loadAttempts(sub.name))];
    if (sub.dead_letters !== state.deadLetterCount) {
      work.push(once('dead-letters', () => loadDeadLetters(sub.name, sub.dead_letters)));
    }
    await Promise.all(work);
  }

  /** Runs `load` unless the previous call of the same kind is still under way. */
  const inFlight = new Set();
  async function once(kind, load) {
    if (inFlight.has(kind)) return;
    inFlight.add(kind);
    try {
      await load();
    } finally {
      inFlight.delete(kind);
    }
  }

  function fillTopics(topics) {
    const select = $('range-topic');
    const have = [...select.options].map((o) => o.value).join('\n');
    if (have === topics.join('\n')) return;
    select.replaceChildren(...topics.map((t) => el('option', { value: t, text: t })));
  }

  async function loadDeadLetters(name, count) {
    const body = $('dead-letters-body');
    try {
      const data = await api('GET', `/subscribers/${enc(name)}/dead-letters?limit=${DEAD_LETTER_LIMIT}`);
      if (name !== state.selected) return;
      state.deadLetterCount = count;
      const records = (data && data.records) || [];
      body.replaceChildren(...records.map((r) => deadLetterRow(r)));
      if (records.length === 0) {
        body.append(el('tr', {}, el('td', { class: 'empty', colspan: 6, text: 'No dead letters.' })));
      }
      $('dlq-title').textContent = records.length >= DEAD_LETTER_LIMIT
        ? `Dead letters (first ${DEAD_LETTER_LIMIT})`
        : 'Dead letters';
      updateReplayButtons();
    } catch (err) {
      if (name !== state.selected) return;
      body.replaceChildren(el('tr', {}, el('td', { class: 'empty', colspan: 6, text: describe(err) })));
    }
  }

  function deadLetterRow(r) {
    const id = r.event_id || `${r.partition}/${r.offset}`;
    const payload = el('details', { class: 'payload' },
      el('summary', { text: 'payload' }),
      el('pre', { class: 'mono', text: JSON.stringify(r.payload, null, 2) }));
    const replay = el('button', {
      type: 'button',
      class: 'small replay',
      'data-testid': 'replay-record',
      'aria-label': `Replay ${id}`,
      text: 'Replay',
      onclick: () => startReplay(
        { source: 'dead-letters', partition: r.partition, offset: r.offset },
        `Replay of ${r.event_type || 'record'} ${r.partition}/${r.offset}`,
      ),
    });
    return el('tr', {
      'data-testid': 'dead-letter-row',
      'data-partition': r.partition,
      'data-offset': r.offset,
      'data-event-id': r.event_id || '',
      'data-replayed': r.replayed ? 'true' : 'false',
    },
    el('td', { class: 'mono', text: `${r.partition}/${r.offset}` }),
    el('td', {},
      el('strong', { text: r.event_type || '(no type)' }),
      el('span', { class: 'sub mono', 'data-testid': 'event-id', text: r.event_id || '(undecodable)' }),
      r.key ? el('span', { class: 'sub mono', text: `key ${r.key}` }) : null,
      payload),
    el('td', { class: 'num', text: fmtInt(r.attempts) }),
    el('td', { class: 'error-text' },
      el('span', { 'data-testid': 'last-error', text: r.last_error || '—' }),
      r.origin ? el('span', { class: 'sub mono', text: `from ${r.origin}` }) : null),
    el('td', {},
      fmtTime(r.dead_lettered_at),
      r.replayed ? el('span', { class: 'sub' }, el('span', { class: 'badge replayed', text: 'replayed' })) : null),
    el('td', {}, replay));
  }

  async function loadAttempts(name) {
    const body = $('attempts-body');
    const note = $('attempts-note');
    try {
      const data = await api('GET', `/attempts?subscriber=${enc(name)}&limit=${ATTEMPT_LIMIT}`);
      if (name !== state.selected) return;
      const attempts = (data && data.attempts) || [];
      const key = JSON.stringify(attempts);
      note.textContent = attempts.length ? `last ${attempts.length}` : '';
      if (key === state.attemptsKey) return; // unchanged: keep scroll position
      state.attemptsKey = key;
      body.replaceChildren(...attempts.map(attemptRow));
      if (attempts.length === 0) {
        body.append(el('tr', {}, el('td', { class: 'empty', colspan: 6, text: 'No attempts recorded yet.' })));
      }
    } catch (err) {
      if (name !== state.selected) return;
      state.attemptsKey = '';
      note.textContent = '';
      body.replaceChildren(el('tr', {}, el('td', { class: 'empty', colspan: 6, text: describe(err) })));
    }
  }

  function attemptRow(a) {
    const outcome = a.outcome || 'unknown';
    return el('tr', { 'data-testid': 'attempt-row', 'data-outcome': outcome },
      el('td', { text: fmtTime(a.at) }),
      el('td', { class: 'mono', text: a.event_id || '—' }),
      el('td', { class: 'num', text: fmtInt(a.attempt) }),
      el('td', {},
        el('span', { class: `badge ${outcome}`, text: outcome }),
        el('span', { class: 'mono', text: a.status == null ? '' : String(a.status) })),
      el('td', { class: 'num', text: a.latency_ms == null ? '—' : `${fmtInt(a.latency_ms)} ms` }),
      el('td', { class: 'error-text', text: a.error || a.response_excerpt || '' }));
  }

  // ---- replay ------------------------------------------------------------------------------

  function updateReplayButtons() {
    for (const b of document.querySelectorAll('button.replay, [data-testid="replay-range"]')) {
      b.disabled = state.jobRunning;
    }
    const sub = state.subscribers.find((s) => s.name === state.selected);
    $('replay-all').disabled = state.jobRunning || !sub || sub.dead_letters === 0;
  }

  function onReplayAll() {
    const button = $('replay-all');
    const sub = state.subscribers.find((s) => s.name === state.selected);
    if (!sub) return;
    if (state.armedReplayAll !== sub.name) {
      // Two clicks: a replay of every dead letter is not something to do by accident.
      state.armedReplayAll = sub.name;
      button.textContent = typeof sub.dead_letters === 'number'
        ? `Confirm: replay ${fmtInt(sub.dead_letters)} record(s)`
        : 'Confirm: replay all';
      setTimeout(disarmReplayAll, 5000);
      return;
    }
    disarmReplayAll();
    startReplay({ source: 'dead-letters' }, `Replay of all dead letters of ${sub.name}`);
  }

  function disarmReplayAll() {
    state.armedReplayAll = null;
    $('replay-all').textContent = 'Replay all';
  }

  function onReplayRange(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const topic = form.topic.value;
    const kind = form.kind.value;
    const from = form.from.value.trim();
    const to = form.to.value.trim();
    let body;
    if (kind === 'offsets') {
      if (!/^\d+$/.test(from) || !/^\d+$/.test(to) || Number(from) > Number(to)) {
        setStatus('Offsets must be whole numbers, from <= to.', true);
        return;
      }
      body = { source: 'topic', topic, from_offset: Number(from), to_offset: Number(to) };
    } else {
      if (Number.isNaN(Date.parse(from)) || Number.isNaN(Date.parse(to))) {
        setStatus('Times must be RFC 3339, e.g. 2026-11-23T10:00:00Z.', true);
        return;
      }
      body = { source: 'topic', topic, from_time: from, to_time: to };
    }
    startReplay(body, `Replay of ${topic} ${from} … ${to}`);
  }

  function onRangeKind() {
    const times = $('range-form').kind.value === 'times';
    $('range-from-label').textContent = times ? 'From time' : 'From offset';
    $('range-to-label').textContent = times ? 'To time' : 'To offset';
    $('range-from').placeholder = times ? '2026-11-23T10:00:00Z' : '0';
    $('range-to').placeholder = times ? '2026-11-23T11:00:00Z' : '1000';
  }

  async function startReplay(body, label) {
    const name = state.selected;
    if (!name || state.jobRunning) return;
    state.jobRunning = true;
    updateReplayButtons();
    showJob(label, 'running', 'starting…', 0, 1);
    try {
      const res = await api('POST', `/subscribers/${enc(name)}/replay`, body);
      await trackJob(res.job_id, label);
    } catch (err) {
      showJob(label, 'failed', describe(err), 0, 1);
    } finally {
      state.jobRunning = false;
      updateReplayButtons();
      state.deadLetterCount = null; // reload the list on the next refresh
      refresh();
    }
  }

  async function trackJob(id, label) {
    let misses = 0;
    for (;;) {
      let job;
      try {
        job = await api('GET', `/jobs/${enc(id)}`);
        misses = 0;
      } catch (err) {
        // A lost poll is not a failed job; an unknown job (404) or a run of errors is.
        misses += 1;
        if ((err instanceof ApiError && err.status === 404) || misses >= 10) {
          showJob(label, 'failed', describe(err), 0, 1);
          return;
        }
        await sleep(JOB_POLL_MS);
        continue;
      }
      const total = job.total || 0;
      const progress = `${fmtInt(job.done)} / ${fmtInt(total)} record(s)`;
      if (job.state === 'running') {
        showJob(label, 'running', progress, job.done, total);
      } else if (job.state === 'done') {
        showJob(label, 'done', `done: ${progress} replayed`, job.done, total);
        setStatus(`${label}: done, ${fmtInt(job.done)} record(s) sent back through the first retry tier.`);
        return;
      } else {
        showJob(label, 'failed', `failed after ${progress}: ${job.error || 'unknown error'}`, job.done, total);
        return;
      }
      await sleep(JOB_POLL_MS);
    }
  }

  function showJob(label, jobState, text, done, total) {
    $('job').hidden = false;
    $('job-label').textContent = label;
    const bar = $('job-progress');
    bar.max = Math.max(total, 1);
    bar.value = jobState === 'done' && total === 0 ? 1 : done;
    const status = $('job-status');
    status.textContent = text;
    status.dataset.state = jobState;
    status.className = `badge ${jobState}`;
  }

  // ---- token and start-up --------------------------------------------------------------------

  function onToken(event) {
    event.preventDefault();
    state.token = $('token').value.trim();
    if (!state.token) return;
    sessionStorage.setItem(TOKEN_KEY, state.token);
    setStatus('Connecting…', false, true);
    refresh();
  }

  function onForget() {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = '';
    $('token').value = '';
    state.rows.clear();
    $('subscribers-body').replaceChildren();
    $('detail').hidden = true;
    $('updated').textContent = '';
    setStatus('Token forgotten. Enter the admin token to connect.');
  }

  function start() {
    $('token').value = state.token;
    $('token-form').addEventListener('submit', onToken);
    $('token-forget').addEventListener('click', onForget);
    $('replay-all').addEventListener('click', onReplayAll);
    $('dlq-refresh').addEventListener('click', () => {
      state.deadLetterCount = null;
      refresh();
    });
    $('range-form').addEventListener('submit', onReplayRange);
    for (const radio of $('range-form').querySelectorAll('input[name="kind"]')) {
      radio.addEventListener('change', onRangeKind);
    }
    onRangeKind();
    window.addEventListener('hashchange', () => {
      const name = selectedFromHash();
      if (name && name !== state.selected) select(name);
    });
    if (state.token) refresh();
    setInterval(() => {
      if (!document.hidden) refresh();
    }, REFRESH_MS);
  }

  start();
})();
