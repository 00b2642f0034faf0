// Entry point for Streamlit components v2: the default export is called on every script
// run with the latest `data`; the React root is created once per host element and kept.
import { createRoot } from "react-dom/client";
import App from "./App.jsx";
import flowCss from "@xyflow/react/dist/style.css";
import canvasCss from "./canvas.css";

const mounted = new WeakMap();

export default function mountCanvas(component) {
  const { parentElement, data, setStateValue } = component;
  let entry = mounted.get(parentElement);
  if (!entry) {
    const style = document.createElement("style");
    style.textContent = flowCss + "\n" + canvasCss;
    const host = document.createElement("div");
    host.className = "tnviz-canvas-host";
    parentElement.appendChild(style);
    parentElement.appendChild(host);
    entry = { root: createRoot(host), host, style };
    // how many times a React root was created on this page (tests check it stays 1)
    window.__tnvizCanvasMounts = (window.__tnvizCanvasMounts || 0) + 1;
    mounted.set(parentElement, entry);
  }
  entry.root.render(<App data={data} setStateValue={setStateValue} />);
  return () => {
    const e = mounted.get(parentElement);
    if (!e) return;
    mounted.delete(parentElement);
    e.root.unmount();
    e.host.remove();
    e.style.remove();
  };
}
