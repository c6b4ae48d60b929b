// After a run, what the video cost, in two lines in Video Combine's panel (node_info.js): wall
// seconds, cost and peak GPU memory, then the seconds of each phase. The report comes with the
// node's output (ui key "wanvolume_report", nodes/video.py); the same report is in the MP4's tags
// and in the .json file beside the video. The node grows by the two lines: the video keeps its size.
// ASCII and "·" only: an emoji would need a font the machine may not have.
import { app } from "../../scripts/app.js";
import { after } from "./api.js";
import { ensureInfo, showInfo } from "./node_info.js";

export const COMBINE_TYPE = "WanVolumeVideoCombine";
const UI_KEY = "wanvolume_report";
const COLOR = "#cfd8dc";
const SHORT = { text_encode: "text", image_encode: "image" };

function money(r) {
  if (r.cost_usd == null) return "no price (set WAN_VOLUME_PRICE_PER_HOUR)";
  const cents = r.cost_usd * 100;
  return `${cents < 1 ? cents.toFixed(3) : cents.toFixed(2)}¢ at $${r.price_per_hour}/h`;
}

function memory(r) {
  return r.peak_gpu_bytes == null ? "peak GPU n/a" : `peak GPU ${(r.peak_gpu_bytes / 2 ** 30).toFixed(1)} GiB`;
}

/** The lines shown under the node: the totals first, so they survive truncation to its width. */
export function reportLines(r) {
  const phases = r.phases.map((p) => {
    const steps = p.step_seconds ? ` (${p.step_seconds.length} steps)` : "";
    return `${SHORT[p.name] || p.name} ${p.seconds.toFixed(2)}${steps}`;
  });
  return [`run ${r.seconds.toFixed(2)} s · ${money(r)} · ${memory(r)}`, phases.join(" · ")];
}

app.registerExtension({
  name: "WanVolume.RunReport",
  async nodeCreated(node) {
    if (node.comfyClass !== COMBINE_TYPE) return;
    after(node, "onExecuted", function (_, output) {
      const report = output?.[UI_KEY]?.[0];
      if (!report) return;
      this.wanVolumeRunReport = { ...report, lines: reportLines(report) };
      showInfo(this, "run", this.wanVolumeRunReport.lines.map((text) => ({ kind: "text", text, color: COLOR })));
    });
    ensureInfo(node);
  },
});
