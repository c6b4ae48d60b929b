// One panel of text inside each of the pack's nodes, as a DOM widget (node.addDOMWidget): both of
// the frontend's node renderers show the same element - over the canvas in the classic one, inside
// the node in Nodes 2.0 (setting Comfy.VueNodes.Enabled) - so what it says reads the same in both,
// is selectable, and survives switching the setting. Each feature fills its own section: the
// volume state and fetch command (loader_badge.js), the LoRA report, the run report.
import { app } from "../../scripts/app.js";

export const INFO_WIDGET = "wanvolume_info";
const SECTIONS = ["state", "lora", "run"];
const LINE = 15;      // px per line (11px monospace), as the CSS below
const PAD = 6;        // px above and below the lines
const MARGIN = 4;     // the DOM widget's margin inside the node
const measure = document.createElement("canvas").getContext("2d");

const CSS = `
.wanvolume-info { font: 11px/${LINE}px monospace; color: #ddd; padding: ${PAD / 2}px 4px;
  box-sizing: border-box; user-select: text; -webkit-user-select: text; cursor: text; }
.wanvolume-info .wv-line { white-space: pre-wrap; overflow-wrap: anywhere; }
.wanvolume-info .wv-state { display: inline-block; color: #fff; border-radius: 5px; padding: 0 6px;
  font: 12px/18px sans-serif; margin-bottom: 2px; }
.wanvolume-info code { font: inherit; color: #ffcdd2; user-select: all; -webkit-user-select: all; }
.wanvolume-info .wv-copy { font: 10px/13px sans-serif; margin-left: 6px; padding: 0 4px; cursor: pointer;
  color: #ddd; background: #333; border: 1px solid #666; border-radius: 3px; vertical-align: 1px; }
/* the classic renderer draws the state as a badge in the title (loader_badge.js) */
.dom-widget .wanvolume-info .wv-state-row { display: none; }
`;

function addStyle() {
  if (document.getElementById("wanvolume-info-style")) return;
  const style = document.createElement("style");
  style.id = "wanvolume-info-style";
  style.textContent = CSS;
  document.head.append(style);
}

/** Whether Nodes 2.0 draws the nodes now (the public setting; false where it does not exist). */
export function vueNodes() {
  return app.extensionManager?.setting?.get?.("Comfy.VueNodes.Enabled") === true;
}

/** Give ``node`` its panel (once; call from nodeCreated, before the renderer reads the widgets). */
export function ensureInfo(node) {
  const own = node.widgets?.find((w) => w.name === INFO_WIDGET);
  if (own) return own;
  addStyle();
  const element = document.createElement("div");
  element.className = "wanvolume-info";
  element.dataset.nodeType = node.comfyClass;
  const widget = node.addDOMWidget(INFO_WIDGET, "wanvolume-info", element, {
    serialize: false, hideOnZoom: true, margin: MARGIN,
    getValue: () => undefined, setValue: () => {},
    getMinHeight: () => height(node), getMaxHeight: () => height(node),
  });
  widget.serialize = false;       // not in widgets_values: saved workflows keep their shape
  widget.wanVolumeSections = {};
  return widget;
}

/** The px the classic renderer gives the panel: its lines at the node's width. Empty, a sliver:
 * at 0 the frontend would size its box from the overlay instead, over the node's other widgets. */
function height(node) {
  const widget = node.widgets?.find((w) => w.name === INFO_WIDGET);
  const lines = Object.values(widget?.wanVolumeSections || {}).flat().filter((l) => l.kind !== "state");
  if (!lines.length) return 2 * MARGIN + 1;
  measure.font = "11px monospace";
  const width = Math.max(40, node.size[0] - 2 * MARGIN - 8);
  const rows = lines.reduce((n, l) => {
    const text = (l.label || "") + l.text + (l.kind === "command" ? " copy  " : "");
    return n + Math.max(1, Math.ceil(measure.measureText(text).width / width));
  }, 0);
  return rows * LINE + PAD + 2 * MARGIN;
}

function copyButton(text) {
  const button = document.createElement("button");
  button.className = "wv-copy";
  button.textContent = "copy";
  button.title = "copy the command";
  button.addEventListener("click", async (e) => {
    e.stopPropagation();
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "copied";
    } catch {
      // no clipboard (a page that is not a secure context): select it for Ctrl+C instead
      const range = document.createRange();
      range.selectNodeContents(button.previousElementSibling);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      button.textContent = "selected";
    }
    setTimeout(() => { button.textContent = "copy"; }, 1500);
  });
  return button;
}

function lineElement(line) {
  const div = document.createElement("div");
  div.className = `wv-line wv-${line.kind}${line.kind === "state" ? "-row" : ""}`;
  if (line.kind === "state") {
    const pill = document.createElement("span");
    pill.className = "wv-state";
    pill.style.background = line.color;
    pill.textContent = line.text;
    div.append(pill);
    return div;
  }
  if (line.color) div.style.color = line.color;
  if (line.label) div.append(line.label);
  if (line.kind === "command") {
    const code = document.createElement("code");
    code.textContent = line.text;
    div.append(code, copyButton(line.text));
  } else {
    div.append(line.text);
  }
  return div;
}

function render(widget) {
  const parts = SECTIONS.map((key) => {
    const lines = widget.wanVolumeSections[key];
    if (!lines?.length) return null;
    const section = document.createElement("div");
    section.className = `wv-section wv-section-${key}`;
    section.dataset.section = key;
    section.append(...lines.map(lineElement));
    return section;
  }).filter(Boolean);
  widget.element.replaceChildren(...parts);
}

/**
 * Show ``lines`` as the node's ``key`` section ([] or null hides it). A line is {kind, text,
 * color?, label?}: kind "state" (the badge's words, a coloured pill where no canvas badge is
 * drawn), "text", or "command" (a command to copy: monospace, select-all, with a copy button).
 */
export function showInfo(node, key, lines) {
  const widget = ensureInfo(node);
  widget.wanVolumeSections[key] = lines || [];
  render(widget);
  const need = node.computeSize();
  if (need[1] > node.size[1]) node.setSize([node.size[0], need[1]]);
  node.setDirtyCanvas?.(true, true);
}
