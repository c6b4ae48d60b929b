// The frontend's missing-models check (properties.models on a node) looks only in ComfyUI's own
// model folders and only understands single files. The pack also finds files on the volume, and
// its loader selects a folder (a diffusers set). Before the check runs, hide the pack's entries
// that the pack can resolve, and the folder entries it cannot check; after the graph is built,
// put them back so the saved workflow keeps them. The loader badge reports missing sets instead.
import { app } from "../../scripts/app.js";
import { LOADER_TYPE, LORA_TYPE, comboOptions } from "./api.js";

const PACK_TYPES = new Set([LOADER_TYPE, LORA_TYPE]);
const FILE_SUFFIXES = [".safetensors", ".sft"];
const hidden = new Map();   // node id -> its original properties.models

function keep(type, entry) {
  if (!FILE_SUFFIXES.some((s) => entry.name.endsWith(s))) return false;   // a folder: badge's job
  return !comboOptions(type, type === LOADER_TYPE ? "model_set" : "lora").includes(entry.name);
}

app.registerExtension({
  name: "WanVolume.MissingModels",
  async beforeConfigureGraph(graphData) {
    hidden.clear();
    for (const node of graphData?.nodes || []) {
      const models = node.properties?.models;
      if (!PACK_TYPES.has(node.type) || !Array.isArray(models)) continue;
      hidden.set(node.id, models);
      node.properties = { ...node.properties, models: models.filter((m) => keep(node.type, m)) };
    }
  },
  async afterConfigureGraph() {
    for (const [id, models] of hidden) {
      const node = app.graph.getNodeById(id);
      if (node) node.properties.models = models;
    }
    hidden.clear();
  },
});
