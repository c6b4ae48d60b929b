// The state of what the loader (and LoRA) node selects: green when it is on the volume, amber or red
// when not (red with the file and reason when a file is damaged), with the command that fetches it
// or the fix, in the node's panel (node_info.js: selectable, with a copy button). The classic
// renderer also draws the state as a badge in the title; in Nodes 2.0 the panel shows it.
// Reads the volume status document.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import { LOADER_TYPE, LORA_TYPE, allLoras, damagedState, fetchHint, onStatus, setState, volumeStatus } from "./api.js";
import { ensureInfo, showInfo, vueNodes } from "./node_info.js";

const COLORS = { ready: "#2e7d32", incomplete: "#b26a00", missing: "#b71c1c", damaged: "#b71c1c",
  warming: "#1565c0", "warm-up failed": "#b71c1c", unknown: "#555" };
const WARMING_POLL_MS = 1500;   // how often the status is re-read while the start-up warm-up runs
const DETAIL = "#ff8a80";
const PLAN = "#a5d6a7";

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

const PENDING = new StateBadge("…", COLORS.unknown);
const HIDDEN = new StateBadge("", COLORS.unknown);

function loraState(doc, name) {
  const lora = allLoras(doc).find((l) => l.name === name);
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

/** What the panel says: the badge's words, then (when not ready) the detail and the command or fix. */
function lines(info, badge) {
  const out = [{ kind: "state", text: badge.text, color: badge.bgColor }];
  if (info.plan) out.push({ kind: "text", text: info.plan, color: PLAN });
  if (info.state === "ready") return out;
  if (info.detail) out.push({ kind: "text", text: info.detail, color: DETAIL });
  if (info.fix) out.push({ kind: "text", label: "fix: ", text: info.fix, color: DETAIL });
  else if (info.command) out.push({ kind: "command", label: "fetch: ", text: info.command, color: DETAIL });
  return out;
}

function update(node, doc) {
  const info = stateOf(node, doc);
  if (!info) return;
  // Read by tests and by other extensions; the badge and the panel show the same.
  node.wanVolumeState = info;
  const what = node.comfyClass === LOADER_TYPE ? "set" : "LoRA";
  // the memory plan the resident set last ran with (nodes/memory_plan.py), on its loader only
  const plan = node.comfyClass === LOADER_TYPE && doc.memory_plan?.set === info.set?.name ? doc.memory_plan : null;
  if (plan) info.plan = plan.summary;
  node.wanVolumeBadge = new StateBadge(
    info.state === "ready" ? `✔ ${info.auto ? `auto → ${info.auto}` : `${what} ready`}${plan ? ` · plan ${plan.mode}` : ""}`
      : info.state === "warming" ? `⏳ ${what} warming: ${info.warming.phase} ${Math.round(100 * info.warming.progress)} %`
      : `⚠ ${what} ${info.state}: see WanVolume panel`, COLORS[info.state] || COLORS.unknown);
  const shown = lines(info, node.wanVolumeBadge);
  // the panel's text under the state, as plain lines (read by tests and other extensions)
  node.wanVolumeLines = shown.slice(1).map((l) => (l.label || "") + l.text);
  showInfo(node, "state", shown);
}

let warmingPoll = null;

function updateAll(doc) {
  for (const node of app.graph?.nodes || []) {
    if (node.comfyClass === LOADER_TYPE || node.comfyClass === LORA_TYPE) update(node, doc);
  }
  // the start-up warm-up (WAN_VOLUME_WARMUP) runs: read the status again until it is done
  if (doc.warming?.active && !warmingPoll) {
    warmingPoll = setTimeout(() => {
      warmingPoll = null;
      volumeStatus({ refresh: true }).catch((err) => console.warn("WanVolume badge:", err.message));
    }, WARMING_POLL_MS);
  }
}

function refreshSoon() {
  volumeStatus().then(updateAll).catch((err) => console.warn("WanVolume badge:", err.message));
}

/** The title badge the classic renderer draws. Nodes 2.0 (frontend 1.45) reads a node's badges
 * once, when it mounts the node, so there the panel's pill carries the state and the badge is
 * left empty (a badge without text is not shown) rather than frozen at its first words. */
function titleBadge(node) {
  if (vueNodes()) return HIDDEN;
  return node.wanVolumeBadge || PENDING;
}

app.registerExtension({
  name: "WanVolume.LoaderBadge",
  async setup() {
    onStatus(updateAll);
    // a run leaves its set resident with a memory plan: the status now names it
    api.addEventListener("execution_success", () => {
      volumeStatus({ refresh: true }).catch((err) => console.warn("WanVolume badge:", err.message));
    });
  },
  async nodeCreated(node) {
    if (node.comfyClass !== LOADER_TYPE && node.comfyClass !== LORA_TYPE) return;
    node.badges = node.badges || [];
    node.badges.push(() => titleBadge(node));
    ensureInfo(node);
    const widget = node.widgets?.find((w) => w.name === "model_set" || w.name === "lora");
    if (widget) {
      const callback = widget.callback;
      widget.callback = function (...args) {
        const out = callback?.apply(this, args);
        refreshSoon();
        return out;
      };
    }
    refreshSoon();
  },
  async afterConfigureGraph() {
    refreshSoon();
  },
});
