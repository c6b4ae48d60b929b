// After a run, how well the LoRA matched the model: a green or amber line in the LoRA node's panel
// (node_info.js; "✔ 400/400 layers matched (...)"), and a warning toast for a partial match. The
// report comes with the node's output (ui key "wanvolume_lora", nodes/lora_node.py); the badge in
// loader_badge.js says whether the FILE is on the volume, this line how well it MATCHED.
import { app } from "../../scripts/app.js";
import { LORA_TYPE, after } from "./api.js";
import { ensureInfo, showInfo } from "./node_info.js";

const UI_KEY = "wanvolume_lora";
const COLORS = { full: "#66bb6a", partial: "#ffb300" };

/** The line's text: counts first, so they survive truncation to the node's width. */
export function reportText(r) {
  const mark = r.status === "full" ? "✔" : "⚠";
  let text = `${mark} ${r.matched}/${r.total} layers matched (${r.lora_format})`;
  if (r.deltas) text += `, ${r.deltas} as full deltas`;
  if (r.skipped) text += `, ${r.skipped} keys not applied`;
  return text;
}

/** The report for the LoRA the node selects now; a stale one (the widget changed) shows nothing. */
function current(node) {
  const r = node.wanVolumeLoraReport;
  const widget = node.widgets?.find((w) => w.name === "lora");
  return r && (!widget || String(widget.value) === r.lora) ? r : null;
}

/** The panel's LoRA line: the current report, or nothing (none yet, or the LoRA changed since). */
function paint(node) {
  const r = current(node);
  showInfo(node, "lora", r ? [{ kind: "text", text: r.text, color: COLORS[r.status] || COLORS.partial }] : []);
}

function show(node, report) {
  const seen = node.wanVolumeLoraReport;
  node.wanVolumeLoraReport = { ...report, text: reportText(report) };
  paint(node);
  // A cached re-run sends the same report again: one toast per new report, not per run.
  const same = seen && ["lora", "status", "matched", "total"].every((k) => seen[k] === report[k]);
  if (report.status === "partial" && !same) {
    app.extensionManager?.toast?.add({
      severity: "warn", life: 10000,
      summary: `LoRA matches the model only partly: ${report.matched}/${report.total} layers`,
      detail: `${report.lora}: ${report.summary}`,
    });
  }
}

app.registerExtension({
  name: "WanVolume.LoraReport",
  async nodeCreated(node) {
    if (node.comfyClass !== LORA_TYPE) return;
    after(node, "onExecuted", function (_, output) {
      const report = output?.[UI_KEY]?.[0];
      if (report) show(this, report);
    });
    ensureInfo(node);
    const widget = node.widgets?.find((w) => w.name === "lora");
    if (widget) after(widget, "callback", () => paint(node));   // another LoRA: hide the old report
  },
});
