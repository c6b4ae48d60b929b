// A badge on the loader (and LoRA) node: green when what it selects is on the volume, amber or red
// when not (red with the file and reason when a file is damaged), with the command that fetches it
// or the fix drawn in the node. Reads the volume status document.
import { app } from "../../scripts/app.js";
import { LOADER_TYPE, LORA_TYPE, after, damagedState, fetchHint, onStatus, setState, volumeStatus } from "./api.js";

const COLORS = { ready: "#2e7d32", incomplete: "#b26a00", missing: "#b71c1c", damaged: "#b71c1c", unknown: "#555" };
const LINE = 15;
const FONT = "11px monospace";
const measure = document.createElement("canvas").getContext("2d");

/** Duck-typed like LiteGraph's LGraphBadge (not exported by the frontend): height, getWidth, draw. */
class StateBadge {
  constructor(text, color) {
    this.text = text; this.bgColor = color; this.height = 20; this.padding = 6; this.visible = true;
  }
  getWidth(ctx) {
    ctx.font = "12px sans-serif";
    return ctx.measureText(this.text).width + 2 * this.padding;
  }
  draw(ctx, x, y) {
    const w = this.getWidth(ctx);
    ctx.save();
    ctx.fillStyle = this.bgColor;
    ctx.beginPath();
    ctx.roundRect(x, y, w, this.height, 5);
    ctx.fill();
    ctx.fillStyle = "#fff";
    ctx.textBaseline = "middle";
    ctx.fillText(this.text, x + this.padding, y + this.height / 2 + 1);
    ctx.restore();
  }
}

function loraState(doc, name) {
  const lora = (doc.loras || []).find((l) => l.name === name);
  if (lora?.damaged) return damagedState(lora);
  if (lora) return { state: "ready", detail: "", command: "" };
  // The profile that provides this very file, not the first LoRA profile missing from the volume.
  return { state: "missing", detail: `not in ${doc.models_dir}`, command: fetchHint(doc, name, "lora") };
}

function stateOf(node, doc) {
  const widget = node.widgets?.find((w) => w.name === (node.comfyClass === LOADER_TYPE ? "model_set" : "lora"));
  if (!widget) return null;
  return node.comfyClass === LOADER_TYPE ? setState(doc, String(widget.value)) : loraState(doc, String(widget.value));
}

/** The detail and the fetch command, word-wrapped to the node's width. */
function wrap(info, width) {
  if (info.state === "ready") return [];
  measure.font = FONT;
  const lines = [];
  const next = info.fix ? `fix: ${info.fix}` : info.command ? `fetch: ${info.command}` : "";
  for (const text of [info.detail, next].filter(Boolean)) {
    let line = "";
    for (const word of text.split(/(?<=[ /])/)) {
      if (line && measure.measureText(line + word).width > width) { lines.push(line); line = ""; }
      line += word;
    }
    lines.push(line);
  }
  return lines;
}

function update(node, doc) {
  const info = stateOf(node, doc);
  if (!info) return;
  // Read by tests and by other extensions; the canvas shows the same through the badge.
  node.wanVolumeState = info;
  node.wanVolumeLines = wrap(info, node.size[0] - 16);
  const need = node.computeSize();
  if (need[1] > node.size[1]) node.setSize([node.size[0], need[1]]);
  const what = node.comfyClass === LOADER_TYPE ? "set" : "LoRA";
  // the memory plan the resident set last ran with (nodes/memory_plan.py), on its loader only
  const plan = node.comfyClass === LOADER_TYPE && doc.memory_plan?.set === info.set?.name ? doc.memory_plan : null;
  if (plan) info.plan = plan.summary;
  node.wanVolumeBadge = new StateBadge(
    info.state === "ready" ? `✔ ${what} ready${plan ? ` · plan ${plan.mode}` : ""}`
      : `⚠ ${what} ${info.state}: see WanVolume panel`, COLORS[info.state]);
  node.setDirtyCanvas?.(true, true);
}

function updateAll(doc) {
  for (const node of app.graph?.nodes || []) {
    if (node.comfyClass === LOADER_TYPE || node.comfyClass === LORA_TYPE) update(node, doc);
  }
}

function refreshSoon() {
  volumeStatus().then(updateAll).catch((err) => console.warn("WanVolume badge:", err.message));
}

function drawCommand(ctx, node) {
  const lines = node.wanVolumeLines;
  if (!lines?.length || node.flags?.collapsed) return;
  ctx.save();
  ctx.font = FONT;
  ctx.fillStyle = "#ff8a80";
  const y0 = node.size[1] - lines.length * LINE - 2;
  lines.forEach((text, i) => ctx.fillText(text, 8, y0 + (i + 1) * LINE - 3));
  ctx.restore();
}

app.registerExtension({
  name: "WanVolume.LoaderBadge",
  async setup() {
    onStatus(updateAll);
  },
  async nodeCreated(node) {
    if (node.comfyClass !== LOADER_TYPE && node.comfyClass !== LORA_TYPE) return;
    node.badges = node.badges || [];
    node.badges.push(() => node.wanVolumeBadge || new StateBadge("…", COLORS.unknown));
    const widget = node.widgets?.find((w) => w.name === "model_set" || w.name === "lora");
    if (widget) {
      const callback = widget.callback;
      widget.callback = function (...args) {
        const out = callback?.apply(this, args);
        refreshSoon();
        return out;
      };
    }
    after(node, "onDrawForeground", function (_, ctx) { drawCommand(ctx, this); });
    // room for the warning
    after(node, "computeSize", function (s) { return [s[0], s[1] + (this.wanVolumeLines?.length ?? 0) * LINE + 4]; });
    refreshSoon();
  },
  async afterConfigureGraph() {
    refreshSoon();
  },
});
