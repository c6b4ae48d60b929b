// Sidebar tab "WanVolume": the models dir, each model set and LoRA (ready / incomplete / damaged /
// missing, verified or not, size), the damaged file with its fix, and the exact command that fetches
// what is missing.
import { app } from "../../scripts/app.js";
import { LORA_TYPE, allLoras, allSets, damagedState, fetchHint, formatBytes, setState, verification, volumeStatus } from "./api.js";

const STYLE = `
.wanvolume-panel { padding: 10px 12px; font-size: 13px; line-height: 1.45; overflow-y: auto; height: 100%; }
.wanvolume-panel h3 { font-size: 13px; margin: 14px 0 6px; text-transform: uppercase; opacity: .75; }
.wanvolume-panel .wv-row { border: 1px solid var(--border-color, #444); border-radius: 6px; padding: 6px 8px; margin-bottom: 6px; }
.wanvolume-panel .wv-name { font-weight: 600; word-break: break-all; }
.wanvolume-panel .wv-state { display: inline-block; border-radius: 4px; padding: 0 6px; margin-right: 6px; font-size: 12px; color: #fff; }
.wanvolume-panel .wv-ready { background: #2e7d32; } .wanvolume-panel .wv-incomplete { background: #b26a00; }
.wanvolume-panel .wv-missing, .wanvolume-panel .wv-damaged, .wanvolume-panel .wv-warm-up-failed { background: #b71c1c; }
.wanvolume-panel .wv-warming { background: #1565c0; }
.wanvolume-panel .wv-damage, .wanvolume-panel .wv-bad { overflow-wrap: anywhere; }
.wanvolume-panel .wv-fix { margin-top: 2px; }
.wanvolume-panel .wv-unverified, .wanvolume-panel .wv-unknown { background: #555; }
.wanvolume-panel .wv-verified { background: #2e7d32; } .wanvolume-panel .wv-hub-hashes { background: #1565c0; }
.wanvolume-panel .wv-bad-file { background: #b71c1c; }
.wanvolume-panel .wv-error { border-color: #b26a00; color: #ffb74d; }
.wanvolume-panel code { display: block; user-select: all; white-space: pre-wrap; word-break: break-all;
  background: rgba(0,0,0,.35); padding: 4px 6px; border-radius: 4px; margin-top: 4px; font-size: 12px; }
.wanvolume-panel .wv-muted { opacity: .7; }
.wanvolume-panel button { margin-top: 4px; }
`;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, attrs);
  for (const child of children) node.append(child);
  return node;
}

function badge(state) {
  return el("span", { className: `wv-state wv-${state.replace(" ", "-")}`, textContent: state });
}

function commandBlock(command) {
  return command ? el("code", { className: "wv-command", textContent: command }) : "";
}

// set.integrity (status.py): what is known of the files' content without hashing them.
const INTEGRITY = {
  "verified": ["verified", "hashed against the published SHA-256, unchanged since"],
  "hub-metadata": ["hub hashes", "hf download recorded the Hub's hashes; each .pth is hashed once at first load (or run `python wanvolume.py adopt`)"],
  "unknown": ["unverified", "filled by hand: no published hash to compare with"],
  "bad": ["bad file", "a file does not match its record or its header is broken"],
};

function integrityBadge(set) {
  const key = set.integrity || (verification(set) === "verified" ? "verified" : "unknown");
  const [label, help] = INTEGRITY[key] || INTEGRITY.unknown;
  const node = badge(label);
  node.title = help;
  return node;
}

function badFiles(set) {
  // The damaged file is shown with its fix above; list the other bad files here.
  const bad = Object.entries(set.bad_files || {}).filter(([path]) => path !== set.damaged?.file);
  return bad.length ? el("div", { className: "wv-bad" }, ...bad.map(([path, why]) =>
    el("div", { className: "wv-error", textContent: `${path}: ${why}` }))) : "";
}

/** Why the nodes refuse a set or LoRA: the file and problem, then the fix. */
function damagedBlock(info) {
  if (info.state !== "damaged") return "";
  return el("div", { className: "wv-damage" },
    el("div", { className: "wv-error wv-damaged-reason", textContent: info.detail }),
    el("div", { className: "wv-fix", textContent: `Fix: ${info.fix}` }));
}

/** A ComfyUI-files set: the files its DiT is paired with, how many others fit; the rule on hover. */
function choicesLine(doc, set) {
  if (set.layout !== "comfy" || !set.components) return "";
  const parts = ["text_encoder", "image_encoder", "vae"].filter((k) => set.components[k]).map((k) => {
    const others = (set.alternatives?.[k]?.length || 1) - 1;
    return `${k}: ${set.components[k].split(/[\\/]/).pop()}${others ? ` (${others} other file(s) fit)` : ""}`;
  });
  return el("div", { className: "wv-muted wv-choice", textContent: `uses ${parts.join(", ")}`,
                     title: `When several files fit: ${doc.choice_rule || ""}. Pick another on the loader.` });
}

function setRow(doc, set) {
  const info = setState(doc, set.name);
  const row = el("div", { className: "wv-row wv-set" },
    el("div", { className: "wv-name", textContent: set.name }),
    el("div", {}, badge(info.state), integrityBadge(set),
      el("span", { className: "wv-muted", textContent: [set.layout, formatBytes(set.size_bytes), set.repo && `Hugging Face cache ${set.repo}`].filter(Boolean).join(", ") })),
    ["incomplete", "warming", "warm-up failed"].includes(info.state) ? el("div", { textContent: info.detail }) : "",
    choicesLine(doc, set),
    damagedBlock(info),
    badFiles(set),
    commandBlock(info.command));
  row.dataset.name = set.name;
  row.dataset.state = info.state;
  if (info.file) row.dataset.file = info.file;
  row.dataset.integrity = set.integrity || "";
  return row;
}

function loraRow(lora) {
  const info = lora.damaged ? damagedState(lora) : { state: "ready" };
  const row = el("div", { className: "wv-row wv-lora" },
    el("div", { className: "wv-name", textContent: lora.name }),
    el("div", {}, badge(info.state), el("span", { className: "wv-muted", textContent: formatBytes(lora.size_bytes) })),
    damagedBlock(info));
  row.dataset.name = lora.name;
  row.dataset.state = info.state;
  if (info.file) row.dataset.file = info.file;
  return row;
}

function profileRow(profile) {
  const state = profile.ready ? "ready" : "missing";
  const row = el("div", { className: "wv-row wv-profile" },
    el("div", { className: "wv-name", textContent: profile.name }),
    el("div", {}, badge(state), el("span", { className: "wv-muted",
      textContent: `${profile.description} (~${profile.approx_gb} GB)` })),
    commandBlock(profile.command));
  row.dataset.name = profile.name;
  row.dataset.state = state;
  return row;
}

/** LoRA files the open workflow asks for that are not on the volume, each with the command that
 * fetches that very file (or the folder to put it in). */
function wantedLoraRows(doc) {
  const have = new Set(allLoras(doc).map((l) => l.name));
  const wanted = new Set((app.graph?.nodes || []).filter((n) => n.comfyClass === LORA_TYPE)
    .map((n) => String(n.widgets?.find((w) => w.name === "lora")?.value ?? "")).filter((v) => v && !have.has(v)));
  return [...wanted].map((name) => {
    const row = el("div", { className: "wv-row wv-lora wv-wanted" },
      el("div", { className: "wv-name", textContent: name }),
      el("div", {}, badge("missing"), el("span", { className: "wv-muted", textContent: "asked for by this workflow" })),
      commandBlock(fetchHint(doc, name, "lora")));
    row.dataset.name = name;
    row.dataset.state = "missing";
    return row;
  });
}

function render(root, doc) {
  const summary = doc.unavailable ? "To see the volume itself, run in a terminal:"
    : doc.ready ? "Ready: a complete model set and a LoRA are on the volume."
    : "Not ready. Fetch a model set and the kissing LoRA with:";
  const warning = doc.unavailable ? el("div", { className: "wv-row wv-error",
    textContent: `${doc.unavailable}. Showing what the loader lists instead.` }) : "";
  root.replaceChildren(
    warning,
    el("div", { className: "wv-row wv-summary" },
      el("div", {}, badge(doc.unavailable ? "unknown" : doc.ready ? "ready" : "missing"), el("span", { className: "wv-name", textContent: "Models dir" })),
      el("div", { className: "wv-models-dir", textContent: doc.models_dir + (doc.exists ? "" : " (does not exist)") }),
      el("div", { textContent: summary }), commandBlock(doc.command)),
    el("h3", { textContent: "Model sets" }),
    ...(allSets(doc).length ? allSets(doc).map((s) => setRow(doc, s))
      : [el("div", { className: "wv-muted", textContent: "none found (see the fetch commands below)" })]),
    el("h3", { textContent: "LoRAs" }),
    ...wantedLoraRows(doc),
    ...(allLoras(doc).length ? allLoras(doc).map(loraRow)
      : [el("div", { className: "wv-muted", textContent: "none: `python wanvolume.py preload --profile kissing-lora`" })]),
    el("h3", { textContent: "Fetchable profiles" }),
    ...doc.profiles.map(profileRow),
    el("div", { className: "wv-muted", textContent: `Searched: ${doc.searched.join(", ")}` }));
}

async function fill(root, refresh) {
  root.dataset.loaded = "false";
  render(root, await volumeStatus({ refresh }));
  root.dataset.loaded = "true";
}

app.registerExtension({
  name: "WanVolume.VolumePanel",
  setup() {
    document.head.append(el("style", { textContent: STYLE }));
    app.extensionManager.registerSidebarTab({
      id: "wanvolume",
      icon: "pi pi-database",
      title: "WanVolume",
      tooltip: "WanVolume: model sets and LoRAs on the volume",
      type: "custom",
      render(container) {
        const body = el("div", { className: "wanvolume-body" });
        const refresh = el("button", { className: "p-button p-button-sm p-button-secondary", textContent: "Refresh" });
        refresh.onclick = () => fill(body, true);
        container.replaceChildren(el("div", { className: "wanvolume-panel" },
          el("div", { className: "wv-name", textContent: "WanVolume: what is on the volume" }), refresh, body));
        fill(body, true);
      },
    });
  },
});
