// Pure edits of the canvas state (see tnviz/canvas.py for its shape). Every function
// returns a new state and never mutates its argument, so undo/redo is a list of states.
// Validation is NOT done here: Python validates each state with the network loader and
// sends the message back; the drawing is kept either way.

export const DEFAULT_SIZE = 4;

const clone = (d) => JSON.parse(JSON.stringify(d));

export function emptyDrawing() {
  return { format: "tnviz.canvas", version: 1, name: "", tensors: [], sizes: {}, inputs: [], outputs: [] };
}

export function indexCounts(d) {
  const counts = {};
  for (const t of d.tensors) for (const leg of t.legs) counts[leg.index] = (counts[leg.index] || 0) + 1;
  return counts;
}

function usedNames(d) {
  const used = new Set(Object.keys(d.sizes));
  for (const t of d.tensors) for (const leg of t.legs) used.add(leg.index);
  return used;
}

export function freshIndex(d, prefix) {
  const used = usedNames(d);
  let n = 1;
  while (used.has(`${prefix}${n}`)) n += 1;
  return `${prefix}${n}`;
}

function freshTensorName(d) {
  const used = new Set(d.tensors.map((t) => t.name));
  for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZ") if (!used.has(c)) return c;
  let n = 1;
  while (used.has(`T${n}`)) n += 1;
  return `T${n}`;
}

let idCounter = 0;
function freshId(d, prefix) {
  const used = new Set();
  for (const t of d.tensors) {
    used.add(t.id);
    for (const leg of t.legs) used.add(leg.id);
  }
  let id;
  do {
    idCounter += 1;
    id = `${prefix}${Date.now().toString(36)}${idCounter}`;
  } while (used.has(id));
  return id;
}

// Keep sizes/inputs/outputs consistent with the legs: unused sizes go, and an index that
// is no longer open (deleted, or now a bond) leaves the input/output order.
export function normalize(d) {
  const counts = indexCounts(d);
  const sizes = {};
  for (const [k, v] of Object.entries(d.sizes)) if (counts[k]) sizes[k] = v;
  const keepOpen = (k) => counts[k] === 1;
  const dedupe = (list) => list.filter((k, i) => list.indexOf(k) === i);
  return { ...d, sizes, inputs: dedupe(d.inputs.filter(keepOpen)), outputs: dedupe(d.outputs.filter(keepOpen)) };
}

export function findLeg(d, legId) {
  for (const t of d.tensors) {
    const pos = t.legs.findIndex((l) => l.id === legId);
    if (pos >= 0) return { tensor: t, leg: t.legs[pos], pos };
  }
  return null;
}

export function addTensor(d, x, y) {
  const out = clone(d);
  const id = freshId(out, "t");
  out.tensors.push({ id, name: freshTensorName(out), x, y, legs: [] });
  return { drawing: out, id };
}

// role: "input" | "output" | "open"
export function addLeg(d, tensorId, role) {
  const out = clone(d);
  const t = out.tensors.find((x) => x.id === tensorId);
  if (!t) return { drawing: d, id: null };
  const index = freshIndex(out, role === "input" ? "i" : role === "output" ? "o" : "k");
  const id = freshId(out, "l");
  t.legs.push({ id, index });
  out.sizes[index] = DEFAULT_SIZE;
  if (role === "input") out.inputs.push(index);
  if (role === "output") out.outputs.push(index);
  return { drawing: normalize(out), id };
}

export function renameTensor(d, tensorId, name) {
  const out = clone(d);
  const t = out.tensors.find((x) => x.id === tensorId);
  if (t) t.name = name;
  return out;
}

export function moveTensor(d, tensorId, x, y) {
  const out = clone(d);
  const t = out.tensors.find((x0) => x0.id === tensorId);
  if (t) {
    t.x = x;
    t.y = y;
  }
  return out;
}

// A size typed by the user: a number when it reads as one, else the raw text so that the
// validator can name it ("index sizes must be positive integers; index 'b1' has size 'x'").
export function parseSize(text) {
  const s = String(text).trim();
  if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s);
  return s;
}

export function setSize(d, index, size) {
  const out = clone(d);
  out.sizes[index] = size;
  return out;
}

// Rename an index everywhere. Renaming onto an existing index joins the two (a bond or a
// hyperedge): that is the keyboard way to connect legs.
export function renameIndex(d, oldName, newName) {
  if (!newName || oldName === newName) return d;
  const out = clone(d);
  const joined = Object.prototype.hasOwnProperty.call(out.sizes, newName) || indexCounts(out)[newName];
  for (const t of out.tensors) for (const leg of t.legs) if (leg.index === oldName) leg.index = newName;
  if (!joined) out.sizes[newName] = out.sizes[oldName];
  delete out.sizes[oldName];
  const swap = (list) => list.map((k) => (k === oldName ? newName : k));
  out.inputs = swap(out.inputs);
  out.outputs = swap(out.outputs);
  return normalize(out);
}

// role: "input" | "output" | "none"
export function setRole(d, index, role) {
  const out = clone(d);
  out.inputs = out.inputs.filter((k) => k !== index);
  out.outputs = out.outputs.filter((k) => k !== index);
  if (role === "input") out.inputs.push(index);
  if (role === "output") out.outputs.push(index);
  return out;
}

export function moveInOrder(d, index, delta) {
  const out = clone(d);
  for (const key of ["inputs", "outputs"]) {
    const list = out[key];
    const pos = list.indexOf(index);
    const to = pos + delta;
    if (pos >= 0 && to >= 0 && to < list.length) {
      list.splice(pos, 1);
      list.splice(to, 0, index);
    }
  }
  return out;
}

// Connect two legs (or a leg and a hyperedge junction, given as {hyper: index}).
// Both open: a new bond b<n> of the default size. One already shared: the other leg joins
// that index (a bond becomes a hyperedge). Both shared: the target's index joins the source's.
export function connect(d, a, b) {
  const counts = indexCounts(d);
  const indexOf = (end) => (end.hyper ? end.hyper : findLeg(d, end.leg)?.leg.index);
  const ia = indexOf(a);
  const ib = indexOf(b);
  if (!ia || !ib || ia === ib) return d;
  const sharedA = (counts[ia] || 0) >= 2;
  const sharedB = (counts[ib] || 0) >= 2;
  if (!sharedA && !sharedB) {
    const bond = freshIndex(d, "b");
    const out = clone(d);
    for (const t of out.tensors)
      for (const leg of t.legs) if (leg.id === a.leg || leg.id === b.leg) leg.index = bond;
    out.sizes[bond] = DEFAULT_SIZE;
    return normalize(out);
  }
  // Join the open end to the shared index (or the target's index into the source's).
  const [from, onto] = sharedB && !sharedA ? [ia, ib] : [ib, ia];
  const out = clone(d);
  for (const t of out.tensors) for (const leg of t.legs) if (leg.index === from) leg.index = onto;
  return normalize(out);
}

// Take one leg out of its bond/hyperedge: it gets a fresh open index of the same size.
export function detachLeg(d, legId) {
  const found = findLeg(d, legId);
  if (!found) return d;
  const out = clone(d);
  const fresh = freshIndex(out, "k");
  const hit = findLeg(out, legId);
  out.sizes[fresh] = out.sizes[found.leg.index] ?? DEFAULT_SIZE;
  hit.leg.index = fresh;
  return normalize(out);
}

// Cut a bond or hyperedge: every leg on it becomes a fresh open index of the same size.
export function cutIndex(d, index) {
  let out = d;
  const legs = [];
  for (const t of d.tensors) for (const leg of t.legs) if (leg.index === index) legs.push(leg.id);
  for (const id of legs) out = detachLeg(out, id);
  return out;
}

export function deleteLeg(d, legId) {
  const out = clone(d);
  for (const t of out.tensors) t.legs = t.legs.filter((l) => l.id !== legId);
  return normalize(out);
}

export function deleteTensor(d, tensorId) {
  const out = clone(d);
  out.tensors = out.tensors.filter((t) => t.id !== tensorId);
  return normalize(out);
}

export function setName(d, name) {
  return { ...clone(d), name };
}

// "1 bond", "2 bonds", "0 bonds": a count with its noun.
export function plural(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

// The summary line under the toolbar: tensors, bonds, hyperedges and open legs.
export function summaryText(d) {
  const counts = Object.values(indexCounts(d));
  return [
    plural(d.tensors.length, "tensor"),
    plural(counts.filter((c) => c === 2).length, "bond"),
    plural(counts.filter((c) => c >= 3).length, "hyperedge"),
    `${d.inputs.length} in / ${d.outputs.length} out legs`,
  ].join(" · ");
}

// Undo/redo history kept outside React, per drawing revision, so that it survives the canvas
// being unmounted and mounted again (the user visits another page and comes back).
const HISTORY_KEY = "__tnvizCanvasHistory";

export function savedHistory(store, revision) {
  const saved = store?.[HISTORY_KEY];
  return saved && saved.revision === revision ? saved.history : { past: [], future: [] };
}

export function saveHistory(store, revision, history) {
  if (store) store[HISTORY_KEY] = { revision, history };
}
