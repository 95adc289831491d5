'use strict';
// The graph page: fetches /api/graph every few seconds and redraws the
// SVG. Positions come laid out from the server; this only draws.
(function () {
  const svg = document.getElementById('graph');
  const windowSel = document.getElementById('window');
  const HEALTHS = ['healthy', 'degraded', 'failure', 'na'];

  function defs() {
    const d = svgEl('defs');
    for (const h of HEALTHS) {
      const m = svgEl('marker', {id: 'arrow-' + h, viewBox: '0 0 10 10', refX: '9', refY: '5',
        markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse'});
      m.appendChild(svgEl('path', {d: 'M0 0 L10 5 L0 10 z'}));
      d.appendChild(m);
    }
    return d;
  }

  function lock(x, y) {
    const g = svgEl('g', {class: 'lock', transform: 'translate(' + x + ' ' + y + ')'});
    g.appendChild(svgEl('title', {}, 'mutual TLS'));
    g.appendChild(svgEl('path', {d: 'M-3 0 v-3 a3 3 0 0 1 6 0 v3'}));
    g.appendChild(svgEl('rect', {x: -4.5, y: 0, width: 9, height: 6.5}));
    return g;
  }

  function kindWord(n) {
    switch (n.kind) {
      case 'service': return 'service';
      case 'app': return 'app';
      case 'gateway': return 'gateway';
      default: return '';
    }
  }

  function drawNode(n, hasChildren) {
    const cls = 'node kind-' + n.kind + ' health-' + n.health + (n.idle ? ' idle' : '');
    const g = svgEl('g', {class: cls, 'data-node': n.id, 'data-kind': n.kind});
    const title = [n.kind + ': ' + n.label];
    if (n.namespace) title.push('namespace ' + n.namespace);
    if (n.service) title.push('host ' + n.service);
    if (n.idle) title.push('no traffic in the window');
    g.appendChild(svgEl('title', {}, title.join('\n')));
    g.appendChild(svgEl('rect', {x: n.x, y: n.y, width: n.w, height: n.h, rx: n.kind === 'version' ? 4 : 6}));
    const cx = n.x + n.w / 2;
    const names = [];
    if (hasChildren) {
      names.push(g.appendChild(svgEl('text', {x: n.x + 10, y: n.y + 19, class: 'name'}, n.label)));
    } else if (n.kind === 'version') {
      names.push(g.appendChild(svgEl('text', {x: cx, y: n.y + n.h / 2 + 4, class: 'name', 'text-anchor': 'middle'}, n.label)));
    } else {
      names.push(g.appendChild(svgEl('text', {x: cx, y: n.y + 20, class: 'name', 'text-anchor': 'middle'}, n.label)));
      g.appendChild(svgEl('text', {x: cx, y: n.y + 35, class: 'kind', 'text-anchor': 'middle'}, kindWord(n)));
    }
    g.fit = () => { for (const t of names) fitText(t, n.w - 16); };
    if (n.service && n.service !== 'unknown') {
      const a = svgEl('a', {href: '/services/' + encodeURIComponent(n.service)});
      a.appendChild(g);
      return a;
    }
    return g;
  }

  // fitText shortens a name that is wider than its box; the box's title
  // keeps the whole name.
  function fitText(t, max) {
    const full = t.textContent;
    let n = full.length;
    while (n > 3 && t.getComputedTextLength() > max) {
      n--;
      t.textContent = full.slice(0, n) + '…';
    }
  }

  function drawLabel(e) {
    const g = svgEl('g', {class: 'edge-label', 'data-edge': e.id});
    let line1 = fmtRate(e.rate) + ' rps';
    if (e.percent < 99.95) line1 += ' · ' + fmtPct(e.percent);
    const parts = [];
    if (e.p99 !== undefined) parts.push('p99 ' + fmtMs(e.p99));
    const t1 = svgEl('text', {x: e.labelX, y: e.labelY - 3, 'text-anchor': 'middle'}, line1);
    const t2 = svgEl('text', {x: e.labelX, y: e.labelY + 11, 'text-anchor': 'middle'}, parts.join(' · '));
    if (e.errorPercent > 0) {
      const err = svgEl('tspan', {class: 'err'}, (parts.length ? ' · ' : '') + fmtPct(e.errorPercent) + ' err');
      t2.appendChild(err);
      t2.classList.add('has-err');
    }
    g.appendChild(svgEl('title', {}, e.source + ' → ' + e.target + '\n' + e.protocol + ', reported by ' + e.reporter +
      '\nmTLS ' + fmtPct(e.mtlsPercent) + ', 4xx ' + fmtPct(e.percent4xx) +
      '\np50 ' + fmtMs(e.p50) + ', p90 ' + fmtMs(e.p90) + ', p99 ' + fmtMs(e.p99)));
    const bg = svgEl('rect', {class: 'bg', rx: 3});
    g.appendChild(bg);
    g.appendChild(t1);
    g.appendChild(t2);
    return {g, bg, t1, t2};
  }

  function render(graph) {
    svg.replaceChildren();
    document.getElementById('empty').hidden = graph.nodes.length > 0;
    const w = Math.max(graph.width, 300), h = Math.max(graph.height, 120);
    svg.setAttribute('width', w);
    svg.setAttribute('height', h);
    svg.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
    svg.appendChild(defs());
    const parents = new Set(graph.nodes.filter(n => n.parent).map(n => n.parent));
    const layerNodes = svgEl('g', {class: 'nodes'});
    // Boxes holding versions first, so that the versions draw on top.
    const drawnNodes = [];
    for (const n of graph.nodes.filter(n => !n.parent)) drawnNodes.push(layerNodes.appendChild(drawNode(n, parents.has(n.id))));
    for (const n of graph.nodes.filter(n => n.parent)) drawnNodes.push(layerNodes.appendChild(drawNode(n, false)));
    svg.appendChild(layerNodes);
    for (const d of drawnNodes) (d.fit || d.firstChild.fit)();
    const layerEdges = svgEl('g', {class: 'edges'});
    const labels = svgEl('g', {class: 'labels'});
    svg.appendChild(layerEdges);
    svg.appendChild(labels);
    const drawn = [];
    for (const e of graph.edges) {
      layerEdges.appendChild(svgEl('path', {class: 'edge health-' + e.health, d: e.path,
        'marker-end': 'url(#arrow-' + e.health + ')', 'data-edge': e.id, 'data-source': e.source,
        'data-target': e.target, 'data-rate': e.rate, 'data-error-percent': e.errorPercent,
        'data-lock': e.lock ? 'true' : 'false'}));
      const l = drawLabel(e);
      labels.appendChild(l.g);
      drawn.push([e, l]);
    }
    // Label backgrounds fit their text, known only once drawn.
    for (const [e, l] of drawn) {
      const b1 = l.t1.getBBox(), b2 = l.t2.getBBox();
      const x = Math.min(b1.x, b2.x) - 5, y = b1.y - 2;
      const width = Math.max(b1.width, b2.width) + 10 + (e.lock ? 12 : 0);
      l.bg.setAttribute('x', x - (e.lock ? 12 : 0));
      l.bg.setAttribute('y', y);
      l.bg.setAttribute('width', width);
      l.bg.setAttribute('height', b2.y + b2.height - y + 2);
      if (e.lock) l.g.appendChild(lock(x - 4, b1.y + 4));
    }
  }

  async function refresh() {
    const g = await getJSON('/api/graph?window=' + encodeURIComponent(windowSel.value));
    render(g);
  }

  windowSel.addEventListener('change', () => { refresh().catch(e => setStatus(e.message, true)); });
  poll(refresh, 3000);
})();
