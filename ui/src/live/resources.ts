// The live collections the pages share.

import type { Model, ModelInstance, Worker } from "../api/types";
import { LiveCollection } from "./collection";

export interface ModelFile {
  id: number;
  [field: string]: unknown;
}

export const workers = new LiveCollection<Worker>("/v2/workers");
export const models = new LiveCollection<Model>("/v2/models");
export const instances = new LiveCollection<ModelInstance>("/v2/model-instances");
export const modelFiles = new LiveCollection<ModelFile>("/v2/model-files");

export function resetAll(): void {
  for (const collection of [workers, models, instances, modelFiles]) collection.reset();
}
