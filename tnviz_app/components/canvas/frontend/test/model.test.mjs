// Unit tests of the pure canvas edits (node --test test/). The browser tests drive the same
// functions through the mouse; these pin down the rules quickly.
import test from "node:test";
import assert from "node:assert/strict";
import * as M from "../src/model.js";

function twoTensors() {
  let d = M.emptyDrawing();
  let r = M.addTensor(d, 0, 0);
  const a = r.id;
  r = M.addTensor(r.drawing, 2, 0);
  const b = r.id;
  d = r.drawing;
  d = M.addLeg(d, a, "input").drawing;
  d = M.addLeg(d, a, "open").drawing;
  d = M.addLeg(d, b, "output").drawing;
  d = M.addLeg(d, b, "open").drawing;
  return { d, a, b };
}

const legOf = (d, tid, index) => d.tensors.find((t) => t.id === tid).legs.find((l) => l.index === index).id;

test("new tensors and legs get fresh names and the input/output order", () => {
  const { d } = twoTensors();
  assert.deepEqual(d.tensors.map((t) => t.name), ["A", "B"]);
  assert.deepEqual(d.tensors.map((t) => t.legs.map((l) => l.index)), [["i1", "k1"], ["o1", "k2"]]);
  assert.deepEqual([d.inputs, d.outputs], [["i1"], ["o1"]]);
  assert.equal(d.sizes.k1, M.DEFAULT_SIZE);
});

test("connecting two open legs makes a bond; a third leg joins it as a hyperedge", () => {
  const { d, a, b } = twoTensors();
  const bonded = M.connect(d, { leg: legOf(d, a, "k1") }, { leg: legOf(d, b, "k2") });
  assert.deepEqual(M.indexCounts(bonded), { i1: 1, b1: 2, o1: 1 });
  assert.ok(!("k1" in bonded.sizes) && !("k2" in bonded.sizes));
  let r = M.addTensor(bonded, 1, 1);
  let e = M.addLeg(r.drawing, r.id, "open").drawing;
  const c = r.id;
  const hyper = M.connect(e, { leg: legOf(e, c, "k1") }, { leg: legOf(e, a, "b1") });
  assert.equal(M.indexCounts(hyper).b1, 3);
  // and onto the junction dot
  e = M.addLeg(hyper, c, "open").drawing;
  const four = M.connect(e, { leg: legOf(e, c, "k1") }, { hyper: "b1" });
  assert.equal(M.indexCounts(four).b1, 4);
  assert.equal(M.indexCounts(M.cutIndex(four, "b1")).b1, undefined);
});

test("an open leg that becomes a bond leaves the input/output order", () => {
  const { d, a, b } = twoTensors();
  const bonded = M.connect(d, { leg: legOf(d, a, "i1") }, { leg: legOf(d, b, "o1") });
  assert.deepEqual([bonded.inputs, bonded.outputs], [[], []]);
});

test("roles, order, rename and sizes", () => {
  const { d } = twoTensors();
  let e = M.setRole(d, "k1", "input");
  e = M.moveInOrder(e, "k1", -1);
  assert.deepEqual(e.inputs, ["k1", "i1"]);
  e = M.renameIndex(e, "k1", "x");
  assert.deepEqual(e.inputs, ["x", "i1"]);
  assert.equal(e.sizes.x, M.DEFAULT_SIZE);
  assert.equal(M.parseSize(" 16 "), 16);
  assert.equal(M.parseSize("abc"), "abc");
  assert.equal(M.setSize(e, "x", 7).sizes.x, 7);
  assert.equal(e.sizes.x, M.DEFAULT_SIZE, "edits never mutate their input");
});

test("deleting a tensor drops its open indices; its bond partner becomes open", () => {
  const { d, a, b } = twoTensors();
  const bonded = M.connect(d, { leg: legOf(d, a, "k1") }, { leg: legOf(d, b, "k2") });
  const gone = M.deleteTensor(bonded, a);
  assert.deepEqual(gone.inputs, []);
  assert.deepEqual(Object.keys(gone.sizes).sort(), ["b1", "o1"]);
  assert.equal(M.indexCounts(gone).b1, 1);
  const detached = M.detachLeg(bonded, legOf(bonded, a, "b1"));
  assert.equal(M.indexCounts(detached).b1, 1);
});

test("the summary counts with singular and plural nouns", () => {
  const { d, a, b } = twoTensors();
  assert.equal(M.summaryText(d), "2 tensors · 0 bonds · 0 hyperedges · 1 in / 1 out legs");
  const bonded = M.connect(d, { leg: legOf(d, a, "k1") }, { leg: legOf(d, b, "k2") });
  assert.match(M.summaryText(bonded), /^2 tensors · 1 bond · 0 hyperedges/);
  assert.equal(M.plural(1, "hyperedge"), "1 hyperedge");
  assert.equal(M.plural(0, "tensor"), "0 tensors");
});

test("the undo history is kept per revision outside the component", () => {
  const store = {};
  const h = { past: [M.emptyDrawing()], future: [] };
  assert.deepEqual(M.savedHistory(store, "1-abc"), { past: [], future: [] });
  M.saveHistory(store, "1-abc", h);
  assert.equal(M.savedHistory(store, "1-abc"), h);
  assert.deepEqual(M.savedHistory(store, "2-def"), { past: [], future: [] }, "a new network starts a new history");
});
