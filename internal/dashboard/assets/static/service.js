'use strict';
// The service page: charts of the service's inbound traffic over the
// history window, and its edges, from /api/services/{host}.
(function () {
  const host = document.getElementById('service').dataset.host;
  const H = 180, L = 44, R = 10, T = 10, B = 22;

  // chart draws lines [{cls, name, points: [[t, v|null]]}] into svg.
  function chart(svg, lines, t0, t1) {
    svg.replaceChildren();
    // One user unit per pixel, so that text is not stretched.
    const W = Math.max(svg.clientWidth, 200);
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    let vmax = 0;
    for (const l of lines) for (const p of l.points) if (p[1] !== null) vmax = Math.max(vmax, p[1]);
    vmax = vmax > 0 ? vmax * 1.15 : 1;
    const span = Math.max(t1 - t0, 1);
    const x = t => L + (W - L - R) * (t - t0) / span;
    const y = v => T + (H - T - B) * (1 - v / vmax);
    svg.appendChild(svgEl('line', {class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B}));
    svg.appendChild(svgEl('line', {class: 'axis', x1: L, y1: T, x2: L, y2: H - B}));
    svg.appendChild(svgEl('text', {x: L - 4, y: T + 8, 'text-anchor': 'end'}, vmax >= 10 ? vmax.toFixed(0) : vmax.toFixed(2)));
    svg.appendChild(svgEl('text', {x: L - 4, y: H - B, 'text-anchor': 'end'}, '0'));
    svg.appendChild(svgEl('text', {x: L, y: H - 6}, new Date(t0).toLocaleTimeString()));
    svg.appendChild(svgEl('text', {x: W - R, y: H - 6, 'text-anchor': 'end'}, new Date(t1).toLocaleTimeString()));
    for (const l of lines) {
      let d = '', pen = false, n = 0;
      for (const [t, v] of l.points) {
        if (v === null) { pen = false; continue; }
        d += (pen ? ' L' : ' M') + x(t).toFixed(1) + ' ' + y(v).toFixed(1);
        pen = true;
        n++;
      }
      const path = svgEl('path', {class: 'line ' + l.cls, d: d.trim(), 'data-points': n});
      path.appendChild(svgEl('title', {}, l.name));
      svg.appendChild(path);
    }
  }

  function val(v) { return v === undefined ? null : v; }

  function edgeRows(tbody, edges) {
    tbody.replaceChildren();
    if (!edges.length) {
      const tr = el('tr');
      tr.appendChild(el('td', {colspan: 9, class: 'muted'}, 'No traffic in the last minute.'));
      tbody.appendChild(tr);
      return;
    }
    for (const e of edges) {
      const tr = el('tr', {'data-edge': e.id});
      tr.appendChild(el('td', {}, nodeName(e.source)));
      tr.appendChild(el('td', {}, nodeName(e.target)));
      tr.appendChild(el('td', {class: 'num'}, fmtRate(e.rate)));
      tr.appendChild(el('td', {class: 'num'}, fmtPct(e.percent)));
      tr.appendChild(el('td', {class: 'num health-' + e.health}, fmtPct(e.errorPercent)));
      tr.appendChild(el('td', {class: 'num'}, fmtMs(e.p50)));
      tr.appendChild(el('td', {class: 'num'}, fmtMs(e.p90)));
      tr.appendChild(el('td', {class: 'num'}, fmtMs(e.p99)));
      tr.appendChild(el('td', {}, e.lock ? fmtPct(e.mtlsPercent) : 'no'));
      tbody.appendChild(tr);
    }
  }

  async function refresh() {
    const v = await getJSON('/api/services/' + encodeURIComponent(host));
    const pts = v.series.map(p => Object.assign({}, p, {ms: Date.parse(p.t)}));
    const now = Date.now();
    const t0 = pts.length ? pts[0].ms : now - 60000, t1 = pts.length ? pts[pts.length - 1].ms : now;
    chart(document.getElementById('chart-rate'), [
      {cls: 'rate', name: 'requests/s', points: pts.map(p => [p.ms, p.rate])}], t0, t1);
    chart(document.getElementById('chart-errors'), [
      {cls: 'errors', name: 'error %', points: pts.map(p => [p.ms, val(p.errorPercent)])}], t0, t1);
    chart(document.getElementById('chart-latency'), ['p50', 'p90', 'p99'].map(q => (
      {cls: q, name: q + ' ms', points: pts.map(p => [p.ms, val(p[q])])})), t0, t1);
    edgeRows(document.querySelector('#inbound tbody'), v.inbound);
    edgeRows(document.querySelector('#outbound tbody'), v.outbound);
  }

  poll(refresh, 5000);
})();
