// The tnviz network canvas: React Flow with one custom node per tensor whose legs are
// separate handles (drag leg -> leg to bond, leg -> bond junction to make a hyperedge).
import { useCallback, useEffect, useMemo, useRef, useState, memo } from "react";
import {
  ReactFlow,
  ReactFlowProvider,
  Handle,
  Position,
  Background,
  ConnectionMode,
  BaseEdge,
  EdgeLabelRenderer,
  getStraightPath,
  useReactFlow,
  useUpdateNodeInternals,
  useNodesState,
} from "@xyflow/react";
import * as M from "./model.js";

export const SCALE = 80; // pixels per layout unit
const W = 60; // tensor box
const H = 60;
const STUB_OPEN = 34;
const STUB_BOND = 12;
const COLORS = { input: "#1f77b4", output: "#2ca02c", bond: "#d62728", open: "#888888" };

const toPx = (t) => ({ x: t.x * SCALE - W / 2, y: -t.y * SCALE - H / 2 });
const toUnits = (p) => ({
  x: Math.round(((p.x + W / 2) / SCALE) * 1000) / 1000,
  y: Math.round((-(p.y + H / 2) / SCALE) * 1000) / 1000,
});
const FIT = { padding: 0.3, maxZoom: 1.1 };
const edgeWidth = (size) => 1.5 + 0.7 * Math.log2(Math.max(Number(size) || 1, 1));

// Where each hyperedge's junction dot sits (layout units): the centroid of its tensors, moved
// off the row when it would land on one of them (three tensors in a line).
export function junctions(d) {
  const out = {};
  for (const [index, c] of Object.entries(M.indexCounts(d))) {
    if (c < 3) continue;
    const members = d.tensors.filter((t) => t.legs.some((l) => l.index === index));
    const x = members.reduce((acc, t) => acc + t.x, 0) / members.length;
    let y = members.reduce((acc, t) => acc + t.y, 0) / members.length;
    if (members.some((t) => Math.hypot(t.x - x, t.y - y) < 0.75)) y -= 1.2;
    out[index] = { x, y };
  }
  return out;
}

// Where each leg of each tensor sits: open outputs on top, inputs below, undeclared open legs
// on the right, bonds on the side that faces their partner(s).
function legGeometry(d) {
  const counts = M.indexCounts(d);
  const hubs = junctions(d);
  const centre = {};
  for (const t of d.tensors) centre[t.id] = { x: t.x, y: -t.y };
  const out = {};
  for (const t of d.tensors) {
    const sides = { top: [], bottom: [], left: [], right: [] };
    t.legs.forEach((leg) => {
      const c = counts[leg.index] || 0;
      let side;
      let role = "open";
      let order = Infinity; // open legs after the bonds on a shared side, in their own order
      if (c >= 2) {
        role = "bond";
        const others = d.tensors.filter((o) => o.id !== t.id && o.legs.some((l) => l.index === leg.index));
        let dx = 0;
        let dy = 0;
        if (hubs[leg.index]) {
          // a hyperedge leg points at the junction dot
          dx = hubs[leg.index].x - t.x;
          dy = -hubs[leg.index].y - centre[t.id].y;
        } else {
          for (const o of others) {
            dx += centre[o.id].x - centre[t.id].x;
            dy += centre[o.id].y - centre[t.id].y;
          }
        }
        if (others.length === 0) side = "right";
        else if (Math.abs(dx) >= Math.abs(dy)) side = dx < 0 ? "left" : "right";
        else side = dy < 0 ? "top" : "bottom";
        // along its side, a bond sits where its partner is (no crossing near the tensor)
        order = side === "left" || side === "right" ? dy / (Math.abs(dx) || 1) : dx / (Math.abs(dy) || 1);
      } else if (d.outputs.includes(leg.index)) {
        role = "output";
        side = "top";
      } else if (d.inputs.includes(leg.index)) {
        role = "input";
        side = "bottom";
      } else side = "right";
      sides[side].push({ leg, role, order, k: sides[side].length });
    });
    const legs = [];
    for (const [side, list] of Object.entries(sides)) {
      // parallel bonds (same partner, same order) go by index name on both tensors: side by side
      list.sort((a, b) => a.order - b.order || (a.order === Infinity ? a.k - b.k : a.leg.index < b.leg.index ? -1 : a.leg.index > b.leg.index ? 1 : 0));
      list.forEach(({ leg, role }, k) => {
        const f = (k + 1) / (list.length + 1);
        const stub = role === "bond" ? STUB_BOND : STUB_OPEN;
        let bx, by, tx, ty, position;
        if (side === "top") [bx, by, tx, ty, position] = [W * f, 0, W * f, -stub, Position.Top];
        if (side === "bottom") [bx, by, tx, ty, position] = [W * f, H, W * f, H + stub, Position.Bottom];
        if (side === "left") [bx, by, tx, ty, position] = [0, H * f, -stub, H * f, Position.Left];
        if (side === "right") [bx, by, tx, ty, position] = [W, H * f, W + stub, H * f, Position.Right];
        legs.push({ leg, role, side, bx, by, tx, ty, position });
      });
    }
    out[t.id] = legs;
  }
  return out;
}

function legLabel(d, leg, role) {
  const size = d.sizes[leg.index];
  if (role === "input") return `in${d.inputs.indexOf(leg.index) + 1} ${leg.index}=${size}`;
  if (role === "output") return `out${d.outputs.indexOf(leg.index) + 1} ${leg.index}=${size}`;
  return `? ${leg.index}=${size}`;
}

const TensorNode = memo(function TensorNode({ id, data }) {
  const { tensor, legs, drawing, selection, onSelect, onRename } = data;
  const updateNodeInternals = useUpdateNodeInternals();
  const [editing, setEditing] = useState(false);
  const nameInput = useRef(null);
  // Focus after React Flow has handled the double click (it refocuses the node), not during it.
  useEffect(() => {
    if (!editing) return undefined;
    const timer = setTimeout(() => {
      nameInput.current?.focus();
      nameInput.current?.select();
    }, 0);
    return () => clearTimeout(timer);
  }, [editing]);
  const legKey = legs.map((l) => `${l.leg.id}:${l.side}:${l.tx}:${l.ty}`).join("|");
  useEffect(() => updateNodeInternals(id), [legKey, id, updateNodeInternals]);
  const isSelected = selection?.kind === "tensor" && selection.id === tensor.id;
  return (
    <div className={`tn-tensor${isSelected ? " tn-selected" : ""}`} data-tensor={tensor.name} style={{ width: W, height: H }}>
      <svg className="tn-stubs" width={W} height={H} style={{ overflow: "visible" }}>
        {legs.map((l) => (
          <line
            key={l.leg.id}
            x1={l.bx}
            y1={l.by}
            x2={l.tx}
            y2={l.ty}
            stroke={COLORS[l.role]}
            strokeWidth={edgeWidth(drawing.sizes[l.leg.index])}
            strokeDasharray={l.role === "open" ? "4 3" : undefined}
          />
        ))}
      </svg>
      {editing ? (
        <input
          ref={nameInput}
          className="tn-name-input nodrag"
          defaultValue={tensor.name}
          onKeyDown={(e) => {
            e.stopPropagation();
            if (e.key === "Enter") e.currentTarget.blur();
            if (e.key === "Escape") setEditing(false);
          }}
          onBlur={(e) => {
            setEditing(false);
            if (e.currentTarget.value !== tensor.name) onRename(tensor.id, e.currentTarget.value);
          }}
        />
      ) : (
        <div className="tn-name" title="double-click to rename" onDoubleClick={() => setEditing(true)}>
          {tensor.name}
        </div>
      )}
      {legs.map((l) => {
        const selected = selection?.kind === "leg" && selection.id === l.leg.id;
        return (
          <Handle
            key={l.leg.id}
            id={l.leg.id}
            type="source"
            position={l.position}
            className={`tn-leg tn-leg-${l.role}${selected ? " tn-leg-selected" : ""}`}
            data-leg={l.leg.id}
            data-index={l.leg.index}
            data-role={l.role}
            style={{ left: l.tx, top: l.ty, background: COLORS[l.role] }}
            onClick={(e) => {
              e.stopPropagation();
              onSelect({ kind: "leg", id: l.leg.id });
            }}
          />
        );
      })}
      {legs
        .filter((l) => l.role !== "bond")
        .map((l) => {
          const style = { left: l.tx, top: l.ty };
          const cls = `tn-leg-label tn-label-${l.side}`;
          return (
            <div
              key={`lab-${l.leg.id}`}
              className={cls}
              style={{ ...style, color: COLORS[l.role] }}
              data-leg-label={l.leg.index}
              onClick={(e) => {
                e.stopPropagation();
                onSelect({ kind: "leg", id: l.leg.id });
              }}
            >
              {legLabel(drawing, l.leg, l.role)}
            </div>
          );
        })}
    </div>
  );
});

function HyperNode({ data }) {
  return (
    <div className={`tn-hyper${data.selected ? " tn-selected" : ""}`} title={`hyperedge ${data.index}`}>
      <Handle id={`hyper:${data.index}`} type="source" position={Position.Top} className="tn-hyper-handle" />
    </div>
  );
}

function BondEdge({ id, sourceX, sourceY, targetX, targetY, data }) {
  const [path, labelX, labelY] = getStraightPath({ sourceX, sourceY, targetX, targetY });
  return (
    <>
      <BaseEdge
        id={id}
        path={path}
        interactionWidth={16}
        style={{ stroke: COLORS.bond, strokeWidth: edgeWidth(data.size), opacity: data.selected ? 1 : 0.85 }}
      />
      {data.showLabel && (
        <EdgeLabelRenderer>
          <div
            className={`tn-bond-label nodrag nopan${data.selected ? " tn-selected" : ""}`}
            style={{ transform: `translate(-50%, -50%) translate(${labelX}px, ${labelY}px)` }}
            data-bond={data.index}
            onClick={() => data.onSelect({ kind: "index", index: data.index })}
          >
            {data.index}={data.size}
          </div>
        </EdgeLabelRenderer>
      )}
    </>
  );
}

const nodeTypes = { tensor: TensorNode, hyper: HyperNode };
const edgeTypes = { bond: BondEdge };

function Inspector({ drawing, selection, edit, setSelection }) {
  const counts = M.indexCounts(drawing);
  const help = (
      <div className="tn-inspector tn-help">
        <b>Draw a layer</b>
        <div>+ Tensor, then click the canvas (or double-click it).</div>
        <div>Select a tensor to add legs; drag leg → leg for a bond, leg → bond end or ● for a hyperedge.</div>
        <div>Click a leg or bond to set its size and role. Del deletes, Ctrl+Z / Ctrl+Y undo/redo.</div>
        <div>Double-click a tensor's name to rename it.</div>
      </div>
  );
  if (!selection) return help;
  if (selection.kind === "tensor") {
    const t = drawing.tensors.find((x) => x.id === selection.id);
    if (!t) return help;
    return (
      <div className="tn-inspector" data-testid="inspector-tensor">
        <div className="tn-row">
          <label>Tensor</label>
          <CommitInput key={`name-${t.id}-${t.name}`} value={t.name} testid="tensor-name" onCommit={(v) => edit(M.renameTensor(drawing, t.id, v))} />
        </div>
        <div className="tn-row">
          <button data-testid="add-input-leg" onClick={() => edit(M.addLeg(drawing, t.id, "input").drawing)}>+ input leg</button>
          <button data-testid="add-output-leg" onClick={() => edit(M.addLeg(drawing, t.id, "output").drawing)}>+ output leg</button>
          <button data-testid="add-leg" onClick={() => edit(M.addLeg(drawing, t.id, "open").drawing)}>+ leg</button>
        </div>
        <div className="tn-row">
          <span className="tn-dim">indices: {t.legs.map((l) => l.index).join(", ") || "none"}</span>
        </div>
        <div className="tn-row">
          <button className="tn-danger" data-testid="delete-selected" onClick={() => { edit(M.deleteTensor(drawing, t.id)); setSelection(null); }}>Delete tensor</button>
        </div>
      </div>
    );
  }
  let index;
  let legId = null;
  if (selection.kind === "leg") {
    const found = M.findLeg(drawing, selection.id);
    if (!found) return help;
    index = found.leg.index;
    legId = found.leg.id;
  } else index = selection.index;
  if (!counts[index]) return help;
  const open = counts[index] === 1;
  const role = drawing.inputs.includes(index) ? "input" : drawing.outputs.includes(index) ? "output" : "none";
  const list = role === "input" ? drawing.inputs : drawing.outputs;
  const kind = open ? "open leg" : counts[index] === 2 ? "bond" : `hyperedge (${counts[index]} legs)`;
  return (
    <div className="tn-inspector" data-testid="inspector-index">
      <div className="tn-row">
        <label>Index</label>
        <CommitInput key={`idx-${index}`} value={index} testid="index-name" onCommit={(v) => edit(M.renameIndex(drawing, index, v.trim()))} />
        <span className="tn-dim">{kind}</span>
      </div>
      <div className="tn-row">
        <label>Size</label>
        <CommitInput key={`size-${index}-${drawing.sizes[index]}`} value={String(drawing.sizes[index] ?? "")} testid="index-size" onCommit={(v) => edit(M.setSize(drawing, index, M.parseSize(v)))} />
      </div>
      {open && (
        <div className="tn-row">
          <label>Role</label>
          {["input", "output", "none"].map((r) => (
            <button key={r} data-testid={`role-${r}`} className={role === r ? "tn-on" : ""} onClick={() => edit(M.setRole(drawing, index, r))}>
              {r}
            </button>
          ))}
        </div>
      )}
      {open && role !== "none" && (
        <div className="tn-row">
          <span className="tn-dim">{role} {list.indexOf(index) + 1} of {list.length}</span>
          <button data-testid="order-up" onClick={() => edit(M.moveInOrder(drawing, index, -1))}>↑ earlier</button>
          <button data-testid="order-down" onClick={() => edit(M.moveInOrder(drawing, index, 1))}>↓ later</button>
        </div>
      )}
      <div className="tn-row">
        {legId && !open && <button data-testid="detach-leg" onClick={() => edit(M.detachLeg(drawing, legId))}>Detach leg</button>}
        {!open && <button data-testid="cut-bond" onClick={() => { edit(M.cutIndex(drawing, index)); setSelection(null); }}>Cut {counts[index] === 2 ? "bond" : "hyperedge"}</button>}
        {legId && <button className="tn-danger" data-testid="delete-selected" onClick={() => { edit(M.deleteLeg(drawing, legId)); setSelection(null); }}>Delete leg</button>}
      </div>
    </div>
  );
}

function CommitInput({ value, onCommit, testid }) {
  return (
    <input
      className="tn-input nodrag"
      data-testid={testid}
      defaultValue={value}
      onKeyDown={(e) => {
        e.stopPropagation();
        if (e.key === "Enter") e.currentTarget.blur();
      }}
      onBlur={(e) => {
        if (e.currentTarget.value !== value) onCommit(e.currentTarget.value);
      }}
    />
  );
}

function Canvas({ data, setStateValue }) {
  // the page sends the drawing as JSON text (a dict would make Streamlit import pandas to scan it)
  const sent = typeof data?.drawing === "string" ? JSON.parse(data.drawing) : data?.drawing;
  const incoming = sent || M.emptyDrawing();
  const revision = data?.revision ?? "";
  const [drawing, setDrawing] = useState(incoming);
  // the history survives a remount (another page visited and back) while the revision is the same
  const [history, setHistory] = useState(() => M.savedHistory(window, revision));
  const [selection, setSelection] = useState(null);
  const [mode, setMode] = useState("select");
  const [loaded, setLoaded] = useState(revision);
  const seq = useRef(0);
  const { screenToFlowPosition, fitView } = useReactFlow();

  // A new network from Python (template, upload): replace the drawing, start a new history.
  useEffect(() => {
    if (revision !== loaded) {
      setDrawing(incoming);
      setHistory({ past: [], future: [] });
      setSelection(null);
      setLoaded(revision);
      setTimeout(() => fitView(FIT), 30);
    }
  }, [revision]); // eslint-disable-line react-hooks/exhaustive-deps

  useEffect(() => M.saveHistory(window, loaded, history), [history, loaded]);

  useEffect(() => {
    const timer = setTimeout(() => fitView(FIT), 60);
    return () => clearTimeout(timer);
  }, []); // eslint-disable-line react-hooks/exhaustive-deps

  // The drawing area takes the width the page gives it: refit the view when that width changes
  // (a resized window, the sidebar opened or closed), debounced so a drag of the window edge
  // refits once at the end.
  const flowRef = useRef(null);
  useEffect(() => {
    const el = flowRef.current;
    if (!el || typeof ResizeObserver === "undefined") return undefined;
    let width = el.clientWidth;
    let timer = null;
    const observer = new ResizeObserver(() => {
      if (Math.abs(el.clientWidth - width) < 2) return;
      width = el.clientWidth;
      clearTimeout(timer);
      timer = setTimeout(() => fitView(FIT), 120);
    });
    observer.observe(el);
    return () => { observer.disconnect(); clearTimeout(timer); };
  }, [fitView]);

  const send = useCallback(
    (d) => {
      seq.current += 1;
      setStateValue("drawing", { revision, seq: `${Date.now()}-${seq.current}`, drawing: d });
    },
    [revision, setStateValue]
  );

  const edit = useCallback(
    (next) => {
      if (!next || next === drawing) return;
      setHistory((h) => ({ past: [...h.past.slice(-199), drawing], future: [] }));
      setDrawing(next);
      send(next);
    },
    [drawing, send]
  );
  const undo = useCallback(() => {
    if (!history.past.length) return;
    const prev = history.past[history.past.length - 1];
    setHistory({ past: history.past.slice(0, -1), future: [drawing, ...history.future] });
    setDrawing(prev);
    send(prev);
  }, [history, drawing, send]);
  const redo = useCallback(() => {
    if (!history.future.length) return;
    const next = history.future[0];
    setHistory({ past: [...history.past, drawing], future: history.future.slice(1) });
    setDrawing(next);
    send(next);
  }, [history, drawing, send]);

  const onRename = useCallback((tid, name) => edit(M.renameTensor(drawing, tid, name)), [drawing, edit]);

  const geometry = useMemo(() => legGeometry(drawing), [drawing]);

  const derivedNodes = useMemo(() => {
    const nodes = drawing.tensors.map((t) => ({
      id: t.id,
      type: "tensor",
      position: toPx(t),
      data: { tensor: t, legs: geometry[t.id], drawing, selection, onSelect: setSelection, onRename },
    }));
    for (const [index, { x, y }] of Object.entries(junctions(drawing))) {
      nodes.push({
        id: `hyper:${index}`,
        type: "hyper",
        position: { x: x * SCALE - 7, y: -y * SCALE - 7 },
        draggable: false,
        data: { index, selected: selection?.kind === "index" && selection.index === index },
      });
    }
    return nodes;
  }, [drawing, geometry, selection, onRename]);

  // Nodes follow the drawing in the same render (not an effect later), so that what is on
  // screen never lags an edit: a drag that starts right after an edit grabs the right leg.
  const [nodes, setNodes, onNodesChange] = useNodesState(derivedNodes);
  const [shownNodes, setShownNodes] = useState(derivedNodes);
  if (shownNodes !== derivedNodes) {
    setShownNodes(derivedNodes);
    // keep each node's measured size: without it React Flow hides the node until it is
    // measured again, and a click in that frame would fall through to the pane
    setNodes((current) => {
      const measured = new Map(current.map((n) => [n.id, n.measured]));
      return derivedNodes.map((n) => (measured.get(n.id) ? { ...n, measured: measured.get(n.id) } : n));
    });
  }

  const edges = useMemo(() => {
    const list = [];
    const legsOf = {};
    for (const t of drawing.tensors) for (const leg of t.legs) (legsOf[leg.index] ||= []).push({ t, leg });
    for (const [index, members] of Object.entries(legsOf)) {
      if (members.length < 2) continue;
      const selected = selection?.kind === "index" && selection.index === index;
      const base = { index, size: drawing.sizes[index], selected, onSelect: setSelection };
      if (members.length === 2) {
        const [a, b] = members;
        list.push({
          id: `bond:${index}`,
          type: "bond",
          source: a.t.id,
          sourceHandle: a.leg.id,
          target: b.t.id,
          targetHandle: b.leg.id,
          data: { ...base, showLabel: true },
        });
      } else {
        members.forEach(({ t, leg }, k) =>
          list.push({
            id: `hyper:${index}:${leg.id}`,
            type: "bond",
            source: t.id,
            sourceHandle: leg.id,
            target: `hyper:${index}`,
            targetHandle: `hyper:${index}`,
            data: { ...base, showLabel: k === 0 },
          })
        );
      }
    }
    return list;
  }, [drawing, selection]);

  const onConnect = useCallback(
    (c) => {
      const end = (node, handle) => (String(node).startsWith("hyper:") ? { hyper: String(handle).slice(6) } : { leg: handle });
      edit(M.connect(drawing, end(c.source, c.sourceHandle), end(c.target, c.targetHandle)));
    },
    [drawing, edit]
  );

  const onNodeDragStop = useCallback(
    (_e, node) => {
      if (node.type !== "tensor") return;
      const p = toUnits(node.position);
      const t = drawing.tensors.find((x) => x.id === node.id);
      if (t && (t.x !== p.x || t.y !== p.y)) edit(M.moveTensor(drawing, node.id, p.x, p.y));
    },
    [drawing, edit]
  );

  const addAt = useCallback(
    (clientX, clientY) => {
      const p = screenToFlowPosition({ x: clientX, y: clientY });
      const u = toUnits({ x: p.x - W / 2, y: p.y - H / 2 });
      const { drawing: next, id } = M.addTensor(drawing, u.x, u.y);
      edit(next);
      setSelection({ kind: "tensor", id });
    },
    [drawing, edit, screenToFlowPosition]
  );

  const deleteSelection = useCallback(() => {
    if (!selection) return;
    if (selection.kind === "tensor") edit(M.deleteTensor(drawing, selection.id));
    else if (selection.kind === "leg") edit(M.deleteLeg(drawing, selection.id));
    else if (selection.kind === "index") edit(M.cutIndex(drawing, selection.index));
    setSelection(null);
  }, [selection, drawing, edit]);

  const onKeyDown = useCallback(
    (e) => {
      if (e.target && ["INPUT", "TEXTAREA"].includes(e.target.tagName)) return;
      const mod = e.ctrlKey || e.metaKey;
      if (mod && e.key.toLowerCase() === "z" && !e.shiftKey) { e.preventDefault(); undo(); }
      else if (mod && (e.key.toLowerCase() === "y" || (e.key.toLowerCase() === "z" && e.shiftKey))) { e.preventDefault(); redo(); }
      else if (e.key === "Delete" || e.key === "Backspace") { e.preventDefault(); deleteSelection(); }
      else if (e.key === "Escape") { setMode("select"); setSelection(null); }
    },
    [undo, redo, deleteSelection]
  );

  const error = data?.error;
  const errorIsCurrent = !data?.error_revision || data.error_revision === revision;
  return (
    <div className={`tn-canvas mode-${mode}`} tabIndex={0} onKeyDown={onKeyDown} style={{ height: data?.height || 520 }} data-testid="tn-canvas">
      <div className="tn-toolbar">
        <button data-testid="tool-add-tensor" className={mode === "add" ? "tn-on" : ""} onClick={() => setMode(mode === "add" ? "select" : "add")} title="then click on the canvas">
          + Tensor
        </button>
        <button data-testid="undo" disabled={!history.past.length} onClick={undo} title="Ctrl+Z">↶ Undo</button>
        <button data-testid="redo" disabled={!history.future.length} onClick={redo} title="Ctrl+Y">↷ Redo</button>
        <button data-testid="delete" disabled={!selection} onClick={deleteSelection} title="Del">✕ Delete</button>
        <button data-testid="fit" onClick={() => fitView(FIT)}>Fit</button>
        <button data-testid="clear" disabled={!drawing.tensors.length} onClick={() => { edit({ ...M.emptyDrawing(), name: drawing.name }); setSelection(null); }}>Clear</button>
        <span className="tn-dim tn-summary" data-testid="summary">
          {M.summaryText(drawing)}
        </span>
      </div>
      <div className="tn-body">
      <div className="tn-flow" ref={flowRef} data-testid="tn-flow">
      <ReactFlow
        nodes={nodes}
        edges={edges}
        nodeTypes={nodeTypes}
        edgeTypes={edgeTypes}
        onNodesChange={onNodesChange}
        onConnect={onConnect}
        onNodeDragStop={onNodeDragStop}
        onNodeClick={(_e, n) => (n.type === "tensor" ? setSelection({ kind: "tensor", id: n.id }) : setSelection({ kind: "index", index: n.data.index }))}
        onEdgeClick={(_e, edge) => setSelection({ kind: "index", index: edge.data.index })}
        onPaneClick={(e) => {
          if (mode === "add") {
            addAt(e.clientX, e.clientY);
            setMode("select");
          } else setSelection(null);
        }}
        onDoubleClick={(e) => {
          if (e.target?.classList?.contains("react-flow__pane")) addAt(e.clientX, e.clientY);
        }}
        connectionMode={ConnectionMode.Loose}
        connectOnClick={false}
        connectionRadius={24}
        deleteKeyCode={null}
        zoomOnDoubleClick={false}
        autoPanOnNodeFocus={false}
        selectNodesOnDrag={false}
        minZoom={0.2}
        maxZoom={2}
        fitView
        fitViewOptions={FIT}
        proOptions={{ hideAttribution: true }}
      >
        <Background gap={SCALE / 2} size={1} />
      </ReactFlow>
      {error && errorIsCurrent && (
        <div className="tn-error" data-testid="canvas-error" role="alert">
          {error}
        </div>
      )}
      </div>
      <Inspector drawing={drawing} selection={selection} edit={edit} setSelection={setSelection} />
      </div>
    </div>
  );
}

export default function App(props) {
  return (
    <ReactFlowProvider>
      <Canvas {...props} />
    </ReactFlowProvider>
  );
}
