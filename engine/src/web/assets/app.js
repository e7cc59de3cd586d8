// Caseflow web view: the page's only script, served from the binary (the
// Content-Security-Policy allows no inline script). It keeps SLA countdowns ticking,
// refreshes the page's live sections ([data-live]) every few seconds, and helps forms.
(function () {
  'use strict';
  var body = document.body;

  // A navigation from another site (a link in a chat message) arrives without the
  // SameSite=Strict session cookie; reloading from this site sends it.
  var bounce = body.getAttribute('data-bounce');
  if (bounce !== null) {
    if (bounce.charAt(0) === '/' && bounce.charAt(1) !== '/' && bounce.charAt(1) !== '\\') {
      location.replace(bounce);
    }
    return;
  }

  function span(ms) {
    var s = Math.floor(Math.abs(ms) / 1000);
    var d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d > 0) return d + 'd ' + h + 'h';
    if (h > 0) return h + 'h ' + m + 'm';
    if (m > 0) return m + 'm ' + (s % 60) + 's';
    return s + 's';
  }

  // SLA countdowns: elements with data-due (unix ms) of open cases.
  function tick() {
    var now = Date.now();
    document.querySelectorAll('[data-due]').forEach(function (el) {
      var due = Number(el.getAttribute('data-due'));
      if (!isFinite(due)) return;
      var left = due - now;
      if (left > 0) {
        el.textContent = 'due in ' + span(left);
      } else {
        el.textContent = 'breached ' + span(left) + ' ago';
        el.classList.add('breached');
      }
    });
  }
  tick();
  setInterval(tick, 1000);

  // Live sections: fetch this page again and swap each [data-live] section whose
  // server-rendered HTML changed. Forms live outside those sections, so typing is safe.
  var refresh = Number(body.getAttribute('data-refresh'));
  if (refresh > 0 && window.fetch && window.DOMParser) {
    var seen = {};
    document.querySelectorAll('[data-live]').forEach(function (el) {
      seen[el.getAttribute('data-live')] = el.innerHTML;
    });
    var busy = false;
    var stopped = false;
    var poll = function () {
      if (busy || stopped || document.hidden) return;
      busy = true;
      fetch(location.href, {
        credentials: 'same-origin',
        cache: 'no-store',
        redirect: 'manual',
        headers: { 'X-Caseflow-Live': '1' }
      }).then(function (r) {
        if (r.status !== 200) {
          // Logged out, or the page is gone: stop instead of hammering the server.
          stopped = r.type === 'opaqueredirect' || r.status === 403 || r.status === 404;
          return null;
        }
        return r.text();
      }).then(function (text) {
        if (text === null) return;
        var doc = new DOMParser().parseFromString(text, 'text/html');
        doc.querySelectorAll('[data-live]').forEach(function (fresh) {
          var name = fresh.getAttribute('data-live');
          if (seen[name] === fresh.innerHTML) return;
          var el = document.querySelector('[data-live="' + CSS.escape(name) + '"]');
          if (!el) return;
          seen[name] = fresh.innerHTML;
          el.replaceWith(document.importNode(fresh, true));
        });
        tick();
      }).catch(function () {
        // The server may be restarting; try again at the next interval.
      }).then(function () {
        busy = false;
      });
    };
    setInterval(poll, refresh * 1000);
    document.addEventListener('visibilitychange', function () {
      if (!document.hidden) poll();
    });
  }

  // Filter forms submit on change.
  document.querySelectorAll('form[data-autosubmit]').forEach(function (form) {
    form.querySelectorAll('select').forEach(function (sel) {
      sel.addEventListener('change', function () { form.submit(); });
    });
  });

  // Resolving or closing needs a reason.
  document.querySelectorAll('select[data-needs-reason]').forEach(function (sel) {
    var needs = sel.getAttribute('data-needs-reason').split(' ');
    var reason = sel.form && sel.form.querySelector('input[name="reason"]');
    if (!reason) return;
    var update = function () {
      var required = needs.indexOf(sel.value) >= 0;
      reason.required = required;
      reason.closest('label').classList.toggle('required', required);
    };
    sel.addEventListener('change', update);
    update();
  });

  // One submission per click.
  document.querySelectorAll('form[method="post"]').forEach(function (form) {
    form.addEventListener('submit', function () {
      form.querySelectorAll('button[type="submit"]').forEach(function (b) {
        setTimeout(function () { b.disabled = true; }, 0);
      });
    });
  });
})();
