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
  // Wan2.2: one report per expert, named first ("high-noise expert: ...")
  let text = `${mark} ${r.expert ? `${r.expert}-noise expert: ` : ""}${r.matched}/${r.total} layers matched (${r.lora_format})`;
  if (r.no_target) text += `, ${r.no_target} CLIP-branch modules without target`;
  if (r.deltas) text += `, ${r.deltas} as full deltas`;
  if (r.skipped) text += `, ${r.skipped} keys not applied`;
  return text;
}

/** The reports for the LoRA the node selects now; stale ones (the widget changed) show nothing. */
function current(node) {
  const reports = node.wanVolumeLoraReports || [];
  const widget = node.widgets?.find((w) => w.name === "lora");
  return reports.filter((r) => !widget || String(widget.value) === r.lora);
}

/** The panel's LoRA lines (one, or one per Wan2.2 expert), or nothing (none yet, or the LoRA changed). */
function paint(node) {
  showInfo(node, "lora", current(node).map((r) => ({ kind: "text", text: r.text, color: COLORS[r.status] || COLORS.partial })));
}

function show(node, reports) {
  node.wanVolumeLoraReports = reports.map((r) => ({ ...r, text: reportText(r) }));
  // the first (a Wan2.1 set's only) report, as before: read by tests and other extensions
  node.wanVolumeLoraReport = node.wanVolumeLoraReports[0];
  paint(node);
  for (const report of reports) toastIfPartial(node, report);
}

const TOASTED = new WeakMap();   // node -> the last partial report it toasted, per expert

function toastIfPartial(node, report) {
  const seenBy = TOASTED.get(node) || {};
  const seen = seenBy[report.expert || ""];
  seenBy[report.expert || ""] = report;
  TOASTED.set(node, seenBy);
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
      const reports = output?.[UI_KEY] || [];
      if (reports.length) show(this, reports);
    });
    ensureInfo(node);
    const widget = node.widgets?.find((w) => w.name === "lora");
    if (widget) after(widget, "callback", () => paint(node));   // another LoRA: hide the old report
  },
});
