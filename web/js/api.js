// Shared by the pack's editor features: the volume status document and what it says about one
// model set. The document comes from GET /wan_volume/status (nodes/routes.py, wan_engine/store/status.py).
import { api } from "../../scripts/api.js";

export const STATUS_ROUTE = "/wan_volume/status";
export const LOADER_TYPE = "WanVolumeModelLoader";
export const LORA_TYPE = "WanVolumeLoraApply";

let pending = null;
const listeners = new Set();

/**
 * The status document; cached until refresh is asked for. Without the route (an older server, a
 * failed import) it falls back to what the loader and LoRA dropdowns list, with `unavailable` set.
 */
export async function volumeStatus({ refresh = false } = {}) {
  if (!pending || refresh) {
    pending = fetchStatus().catch((err) => fallbackStatus(err.message));
    pending.then((doc) => listeners.forEach((fn) => fn(doc)));
  }
  return pending;
}

/** The values a combo input of a node type offers (what the pack found when the server started). */
export function comboOptions(type, input) {
  const spec = LiteGraph.registered_node_types[type]?.nodeData?.input?.required?.[input];
  if (!spec) return [];
  return Array.isArray(spec[0]) ? spec[0] : spec[1]?.options || [];
}

function fallbackStatus(reason) {
  const real = (name) => !name.startsWith("(no ");
  return {
    unavailable: reason, models_dir: "(unknown: the status route is unavailable)", exists: true,
    searched: [], ready: false, command: "python wanvolume.py status", profiles: [], preloaded: [],
    model_sets: comboOptions(LOADER_TYPE, "model_set").filter(real).map((name) => (
      { name, layout: "as the loader sees it", complete: true, missing: [], verified: null, size_bytes: null })),
    loras: comboOptions(LORA_TYPE, "lora").filter(real).map((name) => ({ name, size_bytes: null })),
  };
}

/** Call fn(doc) whenever a new status document arrives (panel refresh, graph load). */
export function onStatus(fn) {
  listeners.add(fn);
}

async function fetchStatus() {
  const res = await api.fetchApi(STATUS_ROUTE, { cache: "no-store" });
  if (!res.ok) {
    throw new Error(`GET ${STATUS_ROUTE} answered HTTP ${res.status}; the WanVolume routes did not ` +
      "load: see the ComfyUI log for 'WanVolume' and restart the server");
  }
  return res.json();
}

const escapeRegExp = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** A glob of the status document's `provides` (`*` and `?` as fnmatch has them) as a RegExp. */
function globRegExp(glob) {
  return new RegExp(`^${glob.split("").map((c) => (c === "*" ? ".*" : c === "?" ? "." : escapeRegExp(c))).join("")}$`);
}

/** The profile that fetches exactly the file `relpath` (relative to <models>), by the files it provides. */
export function profileForFile(doc, relpath, kind) {
  return (doc.profiles || []).find((p) => (!kind || p.kind === kind)
    && (p.provides || []).some((glob) => globRegExp(glob).test(relpath)));
}

/** The command that fetches the file `relpath`, or where to put it when no profile provides it. */
export function fetchHint(doc, relpath, kind) {
  const profile = profileForFile(doc, relpath, kind);
  if (profile) return profile.command || `python wanvolume.py preload --profile ${profile.name}`;
  const slash = relpath.lastIndexOf("/");
  const folder = slash < 0 ? "" : `${relpath.slice(0, slash)}/`;
  return `put ${relpath.slice(slash + 1)} in ${doc.models_dir}/${folder} (no profile fetches it)`;
}

/** A profile (`wanvolume.py preload --profile NAME`) whose files land in this set's folder. */
export function profileForSet(doc, setName) {
  const byFiles = profileForFile(doc, `${setName}/model_index.json`, "model_set");
  if (byFiles) return byFiles;
  const repoName = new RegExp(`/${escapeRegExp(setName)}(,|$| )`);
  return (doc.profiles || []).find((p) => p.kind === "model_set" && repoName.test(p.description || ""));
}

export function formatBytes(n) {
  if (n == null) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function verification(set) {
  // a Hugging Face cache's set (no preload record): its hash state
  if (!("verified" in set) && set.integrity) return set.integrity === "unknown" ? "unverified" : set.integrity;
  if (set.verified === true) return "verified";
  if (set.verified === false) return "verify failed";
  return "unverified";
}

/**
 * What the volume says about one model set: state is ready | incomplete | damaged | missing, with a
 * short detail and the exact command that fetches what is missing ("" when nothing is). A damaged
 * set (set.damaged: the file and problem the loader refuses it by) carries its fix instead.
 * While the start-up warm-up (WAN_VOLUME_WARMUP, the document's `warming`) loads this set the
 * state is "warming" (detail: phase and percent); a warm-up that failed is "warm-up failed".
 */
export function setState(doc, setName) {
  // an automatic choice ("auto: Wan2.1 I2V 720P"): the set it picks on this volume (the status
  // document's `auto`, wan_engine/store/auto_set.py), or missing with the recommended profile's command
  const auto = (doc.auto || []).find((a) => a.value === setName);
  if (auto && !auto.set) {
    return { state: "missing", detail: `not in ${doc.models_dir}: no complete set for ${setName}`,
             set: null, command: auto.command, auto: setName };
  }
  if (auto) return { ...setState(doc, auto.set), auto: auto.set };
  const base = volumeSetState(doc, setName);
  const warm = doc.warming && doc.warming.set === setName ? doc.warming : null;
  if (warm?.active) {
    return { state: "warming", detail: `${warm.phase} ${Math.round(100 * warm.progress)} %`
      + (warm.bytes_total ? ` of ${formatBytes(warm.bytes_total)}` : ""), set: base.set, command: "", warming: warm };
  }
  // a warm-up that failed on a set the volume has whole: its error (a set not usable says why itself)
  if (warm?.error && base.state === "ready") {
    return { state: "warm-up failed", detail: warm.error, set: base.set, command: "", warming: warm };
  }
  return base;
}

/** Model sets found on the volume and in Hugging Face caches (the status document's `hf_cache`,
 * wan_engine/store/hf_status.py: same fields, `integrity` for the hash state). */
export function allSets(doc) {
  return [...(doc.model_sets || []), ...(doc.hf_cache?.model_sets || [])];
}

/** LoRA files on the volume and in Hugging Face caches. */
export function allLoras(doc) {
  return [...(doc.loras || []), ...(doc.hf_cache?.loras || [])];
}

function volumeSetState(doc, setName) {
  const set = allSets(doc).find((s) => s.name === setName);
  const profile = profileForSet(doc, setName);
  const preloaded = (doc.preloaded || []).find((p) => p.name === setName);
  const command = preloaded?.command || (profile && !profile.ready ? profile.command : "") || "";
  if (!set) {
    return { state: "missing", detail: `not in ${doc.models_dir}`, set: null,
             command: command || doc.command || "python wanvolume.py status" };
  }
  if (!set.complete) {
    return { state: "incomplete", detail: set.unfinished || `missing: ${set.missing.join(", ")}`, set,
             command: set.resume || command || doc.command || "" };
  }
  if (set.damaged) return damagedState(set);
  return { state: "ready", detail: `${formatBytes(set.size_bytes)}, ${verification(set)}`, set, command: "" };
}

/** A set or LoRA whose file the nodes refuse: the file and problem as detail, the fix to show. */
export function damagedState(item) {
  return { state: "damaged", detail: item.damaged.message, file: item.damaged.file,
           fix: item.damaged.fix, command: "" };
}

/** Wrap ``node[name]``: the node's own method (if any) runs first, then ``fn`` with the same
 * arguments and its result; ``fn``'s return value, if not undefined, replaces the result. */
export function after(node, name, fn) {
  const own = node[name];
  node[name] = function (...args) {
    const result = own?.apply(this, args);
    const mine = fn.call(this, result, ...args);
    return mine === undefined ? result : mine;
  };
}
