'use strict';
// Helpers shared by the pages. Data from the mesh is untrusted: it only
// ever reaches the page through textContent and setAttribute.
const SVGNS = 'http://www.w3.org/2000/svg';

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

function fmtRate(r) {
  if (r >= 100) return r.toFixed(0);
  if (r >= 10) return r.toFixed(1);
  return r.toFixed(2);
}

function fmtPct(p) {
  if (p === 0) return '0%';
  if (p < 0.1) return '<0.1%';
  if (p >= 99.95 && p < 100) return '>99.9%';
  return (p >= 10 ? p.toFixed(0) : p.toFixed(1)) + '%';
}

function fmtMs(v) {
  if (v === undefined || v === null) return '–';
  if (v >= 1000) return (v / 1000).toFixed(2) + ' s';
  if (v >= 10) return v.toFixed(0) + ' ms';
  return v.toFixed(1) + ' ms';
}

async function getJSON(url) {
  const r = await fetch(url, {cache: 'no-store'});
  if (!r.ok) throw new Error(url + ': ' + r.status + ' ' + (await r.text()));
  return r.json();
}

function setStatus(text, isError) {
  const s = document.getElementById('status');
  if (!s) return;
  s.textContent = text;
  s.classList.toggle('error', !!isError);
}

// poll calls fn now and then every ms, never overlapping itself.
function poll(fn, ms) {
  const tick = async () => {
    try {
      await fn();
      setStatus('updated ' + new Date().toLocaleTimeString());
    } catch (e) {
      setStatus('update failed: ' + e.message, true);
    }
    setTimeout(tick, ms);
  };
  tick();
}

// nodeName turns a graph node id into words for tables.
function nodeName(id) {
  if (id === 'unknown') return 'unknown';
  const kind = id.slice(0, 2), rest = id.slice(2);
  if (kind === 'v:') {
    const p = rest.split('/');
    return p[1] + ' ' + (p[2] && p[2] !== 'unknown' ? p[2] : 'latest');
  }
  if (kind === 'g:') return rest.split('/')[1] + ' (gateway)';
  return rest;
}
