// After a run, what the video cost, in two lines under Video Combine: wall seconds, cost and peak
// GPU memory, then the seconds of each phase. The report comes with the node's output (ui key
// "wanvolume_report", nodes/video.py); the same report is in the MP4's tags and in the .json file
// beside the video. Drawn below the node, so the video preview inside it keeps its size.
// ASCII and "·" only: an emoji would need a font the machine may not have.
import { app } from "../../scripts/app.js";
import { after } from "./api.js";

export const COMBINE_TYPE = "WanVolumeVideoCombine";
const UI_KEY = "wanvolume_report";
const LINE = 15;
const FONT = "11px monospace";
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

function draw(ctx, node) {
  const r = node.wanVolumeRunReport;
  if (!r || node.flags?.collapsed) return;
  ctx.save();
  ctx.font = FONT;
  // as wide as the longest line (never cut): below the node there is room
  const width = Math.max(node.size[0], ...r.lines.map((l) => ctx.measureText(l).width + 12));
  ctx.fillStyle = "rgba(20, 20, 20, 0.85)";
  ctx.beginPath();
  ctx.roundRect?.(0, node.size[1] + 4, width, r.lines.length * LINE + 8, 4);
  ctx.fill();
  ctx.fillStyle = "#cfd8dc";
  r.lines.forEach((line, i) => ctx.fillText(line, 6, node.size[1] + 4 + LINE * (i + 1)));
  ctx.restore();
}

app.registerExtension({
  name: "WanVolume.RunReport",
  async nodeCreated(node) {
    if (node.comfyClass !== COMBINE_TYPE) return;
    after(node, "onExecuted", function (_, output) {
      const report = output?.[UI_KEY]?.[0];
      if (!report) return;
      this.wanVolumeRunReport = { ...report, lines: reportLines(report) };
      this.setDirtyCanvas?.(true, true);
    });
    after(node, "onDrawForeground", function (_, ctx) { draw(ctx, this); });
  },
});
